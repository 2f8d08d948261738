"""Behaviour pinned across refactorings: fixed pruning runs give the recorded mask and weight hashes.

The reference (tests/fixtures/pinned_hashes.json) was recorded by ``tools/pin_behaviour.py --write`` before the
package was re-laid out; a change of results must be intended and recorded anew.
"""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("pin_behaviour", REPO / "tools" / "pin_behaviour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_masks_and_weights_are_the_pinned_ones():
    tool = _tool()
    expected = json.loads(tool.FIXTURE.read_text())
    got = tool.pinned_hashes()
    assert set(got) == set(expected)
    changed = [name for name in expected if got[name] != expected[name]]
    assert not changed, f"results changed for {changed}"
