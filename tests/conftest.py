"""Fixtures shared across the test folders."""
from __future__ import annotations

import pytest
from cli_helpers import save_tiny_run_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(model directory, calibration text)``: a tiny LLaMA with its tokenizer, saved once per test module."""
    return save_tiny_run_inputs(tmp_path_factory.mktemp("tiny"))


def pytest_addoption(parser):
    parser.addoption("--zoo", action="store_true", default=False,
                     help="also run the conformance zoo's slow families (tests marked zoo)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``zoo`` (the conformance zoo's families beyond the fast ones) run only with ``--zoo``."""
    if config.getoption("--zoo"):
        return
    skip = pytest.mark.skip(reason="a zoo family beyond the fast ones: run with pytest --zoo")
    for item in items:
        if "zoo" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """Under pytest-xdist (``-n 2`` in CI), one intra-op thread per worker: the workers already use every core."""
    import os

    import torch

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
