"""What serves: the model bundle and its manifest, ONNX Runtime sessions, dynamic batching.

Never imports torch: the serving install (``pip install .``) does not have it.
"""
