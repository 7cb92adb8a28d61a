"""sarcoscope.locate"""
