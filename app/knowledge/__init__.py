"""app.knowledge"""
