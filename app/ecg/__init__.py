"""ECG formats in, one ``Recording`` out; preprocessing to model windows.

Knows nothing of HTTP, ONNX or the database.
"""
