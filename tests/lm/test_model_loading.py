import os

import pytest

from swappass.lm.models import ModelLoadError, load_model


@pytest.mark.parametrize("spec", ["./does-not-exist", "/tmp/no/such/dir", "missing.gguf"])
def test_missing_model_paths_fail_clearly(spec):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_hub_id_fails_fast_offline_and_restores_the_hub_setting(monkeypatch):
    import huggingface_hub.constants as hub_constants

    from swappass.lm.models import ModelLoadError, hub_reachable, load_model

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert hub_reachable(timeout=1.0) is False
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: False)
    before = hub_constants.HF_HUB_OFFLINE
    with pytest.raises(ModelLoadError, match="hub is unreachable"):
        load_model("someorg/no-such-model")
    assert hub_constants.HF_HUB_OFFLINE == before and "HF_HUB_OFFLINE" not in os.environ
