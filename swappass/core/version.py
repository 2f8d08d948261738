"""The package version (one place; the top-level package and the ONNX metadata read it here)."""
__version__ = "0.1.0"
