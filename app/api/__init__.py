"""app.api"""
