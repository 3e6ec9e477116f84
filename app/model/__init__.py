"""app.model"""
