"""sarcoscope.pacs"""
