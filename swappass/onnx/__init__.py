"""onnx: export to ONNX and what checks the file (imports only swappass.core, besides onnx and onnxruntime).

``export`` drives it (:func:`export_onnx`): ``adapter`` makes the model exportable, ``naming`` puts names back,
``compact`` stores sparse weights small, ``files`` writes atomically; then ``locate`` and ``audit`` find every
pruned weight in the file and check its zeros and pattern, ``metadata`` describes them in the file, ``verify``
compares onnxruntime with PyTorch, and ``report`` says what happened.
"""
from .adapter import ExportError
from .audit import SparsityAudit, audit_sparsity
from .export import export_onnx
from .metadata import read_sparsity_metadata
from .report import ExportReport
from .verify import VerificationError

__all__ = ["ExportError", "SparsityAudit", "audit_sparsity", "export_onnx", "read_sparsity_metadata", "ExportReport",
           "VerificationError"]
