"""Third-party output: off by default (progress bars, the ONNX exporter's set-up warnings), back with --verbose."""
from __future__ import annotations

import logging

import pytest

from swappass.cli.verbosity import configure_output
from swappass.lm import quiet


@pytest.fixture(autouse=True)
def restore():
    yield
    configure_output(False)  # the command's default, as the other tests run it


def test_quiet_then_verbose():
    from transformers.utils import logging as hf_logging

    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    configure_output(False)
    assert quiet.is_quiet() and not hf_logging.is_progress_bar_enabled()
    assert not registration.isEnabledFor(logging.WARNING)  # "torchvision is not installed. Skipping ..."
    assert hf_logging.get_verbosity() == hf_logging.ERROR
    configure_output(True)
    assert not quiet.is_quiet() and hf_logging.is_progress_bar_enabled()
    assert registration.isEnabledFor(logging.WARNING)


def test_gguf_bar_hidden_only_when_quiet():
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    configure_output(False)
    with quiet.hidden_gguf_progress():
        assert gguf_utils.tqdm is not original and gguf_utils.tqdm(range(3)).disable
    assert gguf_utils.tqdm is original
    configure_output(True)
    with quiet.hidden_gguf_progress():
        assert gguf_utils.tqdm is original


def test_every_command_takes_threads_and_verbose():
    from swappass.cli.main import build_parser

    parser = build_parser()
    for command in ("prune", "eval", "export"):
        args = parser.parse_args([command, "x", *(["--out", "y"] if command != "eval" else []), "--threads", "1",
                                  "--verbose"])
        assert args.threads == "1" and args.verbose
