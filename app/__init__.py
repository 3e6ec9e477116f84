"""ECGFM-KED inference service: zero-shot 12-lead ECG diagnosis with knowledge explanations."""

__version__ = "0.1.0"
