"""WikiText-2 without a local data directory: the cached copy, else the hub through `datasets` (faked here)."""
from __future__ import annotations

import sys

import pytest

from swappass.lm import data, hub_text

ROWS = {  # what `datasets` gives for the two configs: the lines of the original files, blank lines as ""
    ("wikitext-2-raw-v1", "test"): ["", " = Robert Boulter = \n", "", " Robert Boulter is an actor .\n", ""],
    ("wikitext-2-v1", "validation"): ["", " = Homarus gammarus = \n", "", " Homarus gammarus is a <unk> .\n"],
}


@pytest.fixture
def no_local_data(monkeypatch, tmp_path):
    """No data directory with WikiText-2, an empty swappass cache, a reachable hub and a fake `datasets`."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SWAPPASS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SWAPPASS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: True)
    calls, rows = [], dict(ROWS)

    class FakeDatasets:
        @staticmethod
        def load_dataset(name, config, split):
            calls.append((name, config, split))
            return {"text": rows[(config, split)]}

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    return tmp_path, calls, rows


def test_fetched_once_into_the_cache_in_the_shared_layout(no_local_data, capsys):
    tmp_path, calls, rows = no_local_data
    test = data.wikitext2_path("test")
    assert test == tmp_path / "cache" / "data" / "wikitext-2-raw" / "wiki.test.raw"
    assert test.read_text() == " = Robert Boulter = \n Robert Boulter is an actor .\n"  # blank rows dropped
    assert "fetching WikiText-2 test once from the Hugging Face hub" in capsys.readouterr().err
    valid = data.wikitext2_path("valid")
    assert valid.read_text() == " \n = Homarus gammarus = \n \n Homarus gammarus is a <unk> .\n"  # as the file
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
                     ("Salesforce/wikitext", "wikitext-2-v1", "validation")]
    assert data.wikitext2_path("test") == test and len(calls) == 2  # the cached copy: no second download
    assert not list(test.parent.glob("*.partial"))


def test_a_local_directory_wins_over_the_cache(no_local_data):
    tmp_path, calls, rows = no_local_data
    local = tmp_path / "data" / "wikitext-2-raw" / "wiki.test.raw"
    local.parent.mkdir()
    local.write_text(" = Local = \n")
    assert data.wikitext2_path("test") == local and calls == []


def test_no_datasets_or_no_hub_names_the_alternatives(no_local_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(data.DataNotFoundError, match=r"pip install datasets.*--text FILE"):
        data.wikitext2_path("test")
    with pytest.raises(data.DataNotFoundError, match=r"--calib self"):
        data.wikitext2_path("valid")
    monkeypatch.setitem(sys.modules, "datasets", type("D", (), {"load_dataset": staticmethod(lambda *a, **k: 1 / 0)}))
    with pytest.raises(data.DataNotFoundError, match="ZeroDivisionError"):
        data.wikitext2_path("test")
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(data.DataNotFoundError, match="unreachable"):
        data.wikitext2_path("test")
    assert not (hub_text.cached_data_dir() / data.WIKITEXT2["test"]).exists()


def test_the_commands_use_the_fetched_text(no_local_data, tiny, capsys):
    from swappass import cli

    tmp_path, calls, rows = no_local_data
    model_dir, _ = tiny
    rows[("wikitext-2-raw-v1", "test")] = [" the city river stands near the old bridge .\n"] * 40
    rows[("wikitext-2-v1", "validation")] = [" the river and the city are old .\n"] * 40
    assert cli.main(["eval", str(model_dir), "--seqlen", "16", "--max-windows", "2", "--no-progress"]) == 0
    assert "perplexity" in capsys.readouterr().out
    out = tmp_path / "out"
    assert cli.main(["prune", str(model_dir), "--out", str(out), "--nsamples", "2", "--seqlen", "16", "--iters", "2",
                     "--no-progress"]) == 0  # --calib wikitext2, the default
    assert {c[1] for c in calls} == {"wikitext-2-raw-v1", "wikitext-2-v1"}
