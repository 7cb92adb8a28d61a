"""sarcoscope.web"""
