"""app.usecases"""
