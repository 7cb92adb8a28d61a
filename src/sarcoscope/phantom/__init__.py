"""sarcoscope.phantom"""
