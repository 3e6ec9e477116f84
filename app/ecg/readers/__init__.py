"""Format readers and the registry that detects formats from content.

Adding a format: write one module with a ``FormatReader`` and add one line to ``READERS``.
"""
