"""app.ops"""
