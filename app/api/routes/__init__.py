"""app.api.routes"""
