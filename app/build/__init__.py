"""What builds bundles: the checkpoint format, the torch modules, ONNX export, quantisation,
weights fetch and the demo bundle. Needs the ``[export]`` extra (torch, transformers, onnx).
"""
