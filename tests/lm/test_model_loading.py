import pytest

from swappass.lm.models import ModelLoadError, load_model


@pytest.mark.parametrize("spec", ["./does-not-exist", "/tmp/no/such/dir", "missing.gguf"])
def test_missing_model_paths_fail_clearly(spec):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)
