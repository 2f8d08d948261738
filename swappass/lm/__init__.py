"""lm: language-model plumbing around the pass (imports nothing of swappass).

Loading models (``models``: a Hugging Face directory, a GGUF file, a hub id, the ``smollm2-135m`` alias), text
data (``data``: WikiText-2 files, calibration and perplexity windows), calibration sets (``calibration``: a text,
a hub dataset or samples from the model itself), evaluation (``evaluate``: perplexity, KL and top-1 agreement
against a dense model), checks of model files before loading and of the position limit (``model_checks``), and
its errors (``errors``).
"""
from .errors import CalibrationError, DataNotFoundError, LMInputError, ModelLoadError
from .models import load_model

__all__ = ["CalibrationError", "DataNotFoundError", "LMInputError", "ModelLoadError", "load_model"]
