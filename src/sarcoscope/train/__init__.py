"""sarcoscope.train"""
