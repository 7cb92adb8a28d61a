"""sarcoscope.io"""
