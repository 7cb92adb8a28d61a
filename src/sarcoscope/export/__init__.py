"""sarcoscope.export"""
