"""Fault injection: nothing lost, nothing silent (docs/RELIABILITY.md lists each fault and the test here).

Damaged and foreign checkpoints, a model replaced between an interrupt and the resume, a finished directory whose
files were deleted or damaged, a result that breaks its pattern, an unusable output location, a full disk while
saving, an unexpected error, a run where nothing can be pruned, degenerate calibration, and SIGKILL at random
points. Every run is the tiny LLaMA on the CPU (seconds).
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import SMALL, save_tiny_llama
from safetensors.torch import load_file

from swappass import cli
from swappass.cli.checkpoint import INDEX_FILE, LevelCheckpoints
from swappass.cli.exits import ERROR_LOG, EXIT_NOTHING_PRUNED
from swappass.cli.output_dir import CHECKPOINT_DIR, RUN_FILE, STAGING_DIR
from swappass.core.masks import MASKS_FILE, load_masks

REPO = Path(__file__).resolve().parents[2]
LEVELS = 8  # the tiny LLaMA: q/k/v, o, gate/up, down per block, 2 blocks


def prune(*args) -> int:
    return cli.main(["prune", *map(str, args)])


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_same_result(a: Path, b: Path) -> None:
    """The two run directories hold the same pruned weights and masks, bit for bit."""
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = load_masks(a / MASKS_FILE), load_masks(b / MASKS_FILE)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k].mask, mb[k].mask) for k in ma)


def flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def interrupt_after(level: int):
    """A ``LevelCheckpoints.save_level`` that raises KeyboardInterrupt once level ``level`` is saved."""
    real = LevelCheckpoints.save_level

    def save_level(ckpt: LevelCheckpoints, state) -> None:
        real(ckpt, state)
        if state.level == level:
            raise KeyboardInterrupt

    return save_level


@pytest.fixture(scope="module")
def args(tiny):
    _, text = tiny
    return ["--pattern", "row:0.6", "--calib", text, *SMALL]


@pytest.fixture(scope="module")
def straight(tiny, args, tmp_path_factory):
    """A finished, uninterrupted run: the reference result."""
    out = tmp_path_factory.mktemp("straight") / "out"
    assert prune(tiny[0], "--out", out, *args) == 0
    return out


@pytest.fixture(scope="module")
def interrupted(tiny, args, tmp_path_factory):
    """A run interrupted right after level 3 was saved (a module-wide original: tests work on copies)."""
    out = tmp_path_factory.mktemp("interrupted") / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(LevelCheckpoints, "save_level", interrupt_after(3))
    try:
        assert prune(tiny[0], "--out", out, *args) == cli.EXIT_INTERRUPTED
    finally:
        mp.undo()
    assert LevelCheckpoints(out / CHECKPOINT_DIR).finished_levels() == 4
    return out


def copy_of(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("name, damage", [
    ("level-00002.safetensors", flip_byte),
    ("level-00002.safetensors", truncate),
    ("calibration.safetensors", flip_byte),
])
def test_damaged_checkpoint_file_is_refused_naming_it_then_recomputed(tiny, args, straight, interrupted, tmp_path,
                                                                       capsys, name, damage):
    out = copy_of(interrupted, tmp_path)
    path = out / CHECKPOINT_DIR / name
    damage(path)
    before = snapshot(out)
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"checkpoint file {path}" in err and "delete it and run the same command again" in err
    assert ("truncated" if damage is truncate else "does not match its recorded SHA-256") in err
    if name.startswith("level"):
        assert "recompute level 2 and the levels after it (up to 3" in err and "levels 0–1 are kept" in err
    assert snapshot(out) == before  # nothing was written
    path.unlink()  # what the message says to do
    assert prune(tiny[0], "--out", out, *args) == 0
    assert_same_result(straight, out)


def test_mask_that_breaks_its_pattern_is_refused_even_when_its_digest_was_rewritten(tiny, args, interrupted,
                                                                                     tmp_path, capsys):
    """The issue's case: one row of a row:0.6 o_proj keeping one weight too many. Hashes catch a flipped byte;
    should the index be rewritten to match, the pattern check still refuses the mask before it is restored."""
    out = copy_of(interrupted, tmp_path)
    ckpt = LevelCheckpoints(out / CHECKPOINT_DIR)
    state = ckpt.load_level(1)  # level 1: o_proj of block 0
    row = state.rows[0]
    mask = row.mask()
    mask[0, int((~mask[0]).nonzero()[0])] = True
    row.set_mask(mask)
    ckpt.save_level(state)  # re-recorded: its digest matches again
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "resume state of level 1 is damaged or from another run" in err
    assert "model.layers.0.self_attn.o_proj.weight: the mask breaks pattern row:0.6: row 0 keeps 14 weights" in err


def test_level_written_but_not_recorded_is_pruned_again(tiny, args, straight, interrupted, tmp_path, capsys,
                                                        monkeypatch):
    """SIGKILL between a level file's rename and its index record leaves exactly this on disk."""
    out = copy_of(interrupted, tmp_path)
    index = out / CHECKPOINT_DIR / INDEX_FILE
    data = json.loads(index.read_text())
    del data["files"]["level-00003.safetensors"]
    index.write_text(json.dumps(data))
    import swappass.graph.sequential as pipeline

    pruned, real = [], pipeline.convert_groups
    monkeypatch.setattr(pipeline, "convert_groups",
                        lambda prepared, groups, *a, **k: (pruned.extend({g.level for g in groups}),
                                                           real(prepared, groups, *a, **k))[1])
    assert prune(tiny[0], "--out", out, *args) == 0
    assert "level 3's checkpoint file was written but not recorded" in capsys.readouterr().err
    assert pruned == [3, 4, 5, 6, 7]
    assert_same_result(straight, out)


def test_checkpoint_without_index_is_refused(tiny, args, interrupted, tmp_path, capsys):
    out = copy_of(interrupted, tmp_path)
    (out / CHECKPOINT_DIR / INDEX_FILE).unlink()
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    assert "has no index.json" in capsys.readouterr().err
    assert prune(tiny[0], "--out", out, *args, "--overwrite") == 0  # what the message offers


# ------------------------------------------------------------------------------------------------ a replaced model
def test_replaced_model_is_refused_listing_what_changed(tiny, args, tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(tiny[0], model)
    out = tmp_path / "out"
    monkeypatch.setattr(LevelCheckpoints, "save_level", interrupt_after(2))
    assert prune(model, "--out", out, *args) == cli.EXIT_INTERRUPTED
    monkeypatch.undo()
    other = save_tiny_llama(tmp_path / "other", seed=1)  # same tokenizer (same corpus), other weights
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    before = snapshot(out)
    assert prune(model, "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "holds an unfinished run with a different recipe (the model changed (model.safetensors changed" in err
    assert "tokenizer.json" not in err and "--overwrite" in err
    assert snapshot(out) == before
    # a finished run over the model: the same
    done = tmp_path / "done"
    assert prune(model, "--out", done, *args) == 0
    shutil.copy(tiny[0] / "model.safetensors", model / "model.safetensors")
    assert prune(model, "--out", done, *args) == cli.EXIT_BAD_INPUT
    assert "holds a finished run with a different recipe (the model changed" in capsys.readouterr().err


def test_replaced_model_known_only_once_loaded_is_refused(tiny, args, tmp_path, capsys, monkeypatch):
    """A hub id has no files to hash before loading: its loaded state's digest is the fingerprint."""
    import swappass.cli.recipe as recipe

    monkeypatch.setattr(recipe, "file_fingerprint", lambda spec: None)  # as for a hub id
    model = tmp_path / "model"
    shutil.copytree(tiny[0], model)
    out = tmp_path / "out"
    monkeypatch.setattr(LevelCheckpoints, "save_level", interrupt_after(2))
    assert prune(model, "--out", out, *args) == cli.EXIT_INTERRUPTED
    monkeypatch.undo()
    monkeypatch.setattr(recipe, "file_fingerprint", lambda spec: None)
    fingerprint = json.loads((out / CHECKPOINT_DIR / "recipe.json").read_text())["model_fingerprint"]
    assert fingerprint["kind"] == "state" and fingerprint["weights_sha256"]
    shutil.copy(save_tiny_llama(tmp_path / "other", seed=1) / "model.safetensors", model / "model.safetensors")
    assert prune(model, "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "the model changed (weights_sha256" in err and "tokenizer_sha256" not in err


# ------------------------------------------------------------------------------------------------ finished runs
@pytest.mark.parametrize("damage", [
    {"model.safetensors": "delete"},
    {"model.safetensors": "truncate", "tokenizer.json": "flip", "config.json": "delete"},
])
def test_damaged_outputs_are_rebuilt_identical(tiny, args, straight, tmp_path, capsys, damage):
    out = copy_of(straight, tmp_path)
    for name, how in damage.items():
        {"delete": Path.unlink, "truncate": truncate, "flip": flip_byte}[how](out / name)
    assert prune(tiny[0], "--out", out, *args) == 0
    err = capsys.readouterr().err
    for name, how in damage.items():
        assert f"{out / name} " + {"delete": "is missing", "truncate": "has ", "flip": "does not match"}[how] in err
    assert "identical to the files the run wrote" in err
    for name in damage:
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    assert not (out / STAGING_DIR).exists()
    assert prune(tiny[0], "--out", out, *args) == 0  # now it verifies
    assert "files verified); nothing to prune" in capsys.readouterr().err


@pytest.mark.parametrize("name, extra, message", [
    (MASKS_FILE, [], f"the masks exist only in {MASKS_FILE}"),
    ("model.safetensors", ["--refit", "lstsq"], "its refitted weights exist only in those files"),
])
def test_outputs_that_cannot_be_rebuilt_are_refused(tiny, args, straight, tmp_path, capsys, name, extra, message):
    out = copy_of(straight, tmp_path) if not extra else tmp_path / "out"
    if extra:
        assert prune(tiny[0], "--out", out, *args, *extra) == 0
    flip_byte(out / name)
    before = snapshot(out)
    assert prune(tiny[0], "--out", out, *args, *extra) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "with --overwrite to prune again" in err and f"{name} does not match" in err
    assert snapshot(out) == before
    assert prune(tiny[0], "--out", out, *args, *extra, "--overwrite") == 0


def test_record_without_digests_is_refused(tiny, args, straight, tmp_path, capsys):
    out = copy_of(straight, tmp_path)
    record = json.loads((out / RUN_FILE).read_text())
    del record["file_digests"]
    (out / RUN_FILE).write_text(json.dumps(record))
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    assert "records no file digests" in capsys.readouterr().err


def test_damaged_onnx_file_is_exported_again(tiny, args, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *args, "--onnx") == 0
    record = json.loads((out / RUN_FILE).read_text())
    assert "model.onnx" in record["file_digests"]
    truncate(out / "model.onnx")
    capsys.readouterr()
    assert prune(tiny[0], "--out", out, *args) == 0  # without --onnx: the run's file is made again anyway
    captured = capsys.readouterr()
    assert "model.onnx has " in captured.err and "PASSED" in captured.out
    again = json.loads((out / RUN_FILE).read_text())
    assert again["onnx"]["passed"] and again["file_digests"]["model.onnx"]["bytes"] == (out / "model.onnx").stat().st_size


# ------------------------------------------------------------------------------------------------ before writing
def test_pruned_weight_that_breaks_its_mask_is_never_saved(tiny, args, tmp_path, capsys, monkeypatch):
    import swappass.cli.prune as job

    real = job.sparsify

    def leaky(model, *a, **k):
        model, report = real(model, *a, **k)
        row = report["model.layers.1.mlp.down_proj"]
        with torch.no_grad():
            dict(model.named_parameters())[row.param][~row.mask()] = 0.5  # e.g. a buggy method
        return model, report

    monkeypatch.setattr(job, "sparsify", leaky)
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_FAILED_CHECK
    err = capsys.readouterr().err
    assert "model.layers.1.mlp.down_proj.weight:" in err and "non-zero where the mask prunes" in err
    assert "nothing was written" in err
    assert not (out / "model.safetensors").exists() and not (out / RUN_FILE).exists()
    assert LevelCheckpoints(out / CHECKPOINT_DIR).finished_levels() == LEVELS  # the work is kept


# ------------------------------------------------------------------------------------------------ the location
def test_unusable_out_fails_before_loading(tiny, args, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert prune(tiny[0], "--out", blocker / "out", *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{blocker} is not a directory" in err and "loading" not in err


def test_read_only_out_fails_before_loading(tiny, args, tmp_path, capsys):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        assert prune(tiny[0], "--out", mount / "out", *args) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert f"--out {mount / 'out'} cannot be written (Read-only file system)" in err and "loading" not in err
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_too_little_free_space_fails_before_calibration(tiny, args, tmp_path, capsys, monkeypatch):
    import swappass.cli.output_dir as output_dir

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(output_dir.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "97.7 KiB free on its file system, but the run writes about" in err and "calibration:" not in err
    assert not out.exists()


def test_full_disk_while_saving_keeps_the_checkpoint_and_resumes_by_saving(tiny, args, straight, tmp_path, capsys,
                                                                           monkeypatch):
    import transformers

    real = transformers.PreTrainedModel.save_pretrained

    def disk_full(self, directory, *a, **k):
        (Path(directory) / "model.safetensors").write_bytes(b"\0" * 1000)  # a part, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(directory) / "model.safetensors"))

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", disk_full)
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"writing the model to {out} failed (No space left on device)" in err
    assert f"the checkpoint with all {LEVELS} levels is kept" in err and "which only saves" in err
    assert not (out / "model.safetensors").exists() and not (out / RUN_FILE).exists()
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", real)
    assert prune(tiny[0], "--out", out, *args) == 0
    assert f"levels 0–{LEVELS - 1} are done" in capsys.readouterr().err
    assert_same_result(straight, out)


def test_full_tmpfs_while_saving(tiny, args, straight, tmp_path, capsys, monkeypatch):
    """The same with a real full file system: a tmpfs that holds the checkpoint but not the model."""
    import swappass.cli.prune as job

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        monkeypatch.setattr(job, "output_bytes", lambda *a: (0, "nothing"))  # let it start on the small disk
        monkeypatch.setattr(job, "model_file_bytes", lambda spec: 0)
        out = mount / "out"
        assert prune(tiny[0], "--out", out, *args) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "failed (No space left on device)" in err and f"all {LEVELS} levels is kept" in err
        subprocess.run(["mount", "-o", "remount,size=8m", str(mount)], check=True)
        assert prune(tiny[0], "--out", out, *args) == 0
        assert_same_result(straight, out)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ------------------------------------------------------------------------------------------------ other failures
def test_unexpected_error_is_one_line_with_the_traceback_in_the_log(tiny, args, tmp_path, capsys, monkeypatch):
    import swappass.cli.prune as job

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(job, "sparsify", boom)
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *args) == cli.EXIT_FAILED_CHECK
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("swappass prune: unexpected error RuntimeError: boom (the traceback is in "
                              f"{out / ERROR_LOG}; --debug prints it")
    assert "Traceback" not in "\n".join(err)
    log = (out / ERROR_LOG).read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: boom" in log
    assert prune(tiny[0], "--out", out, *args, "--debug") == cli.EXIT_FAILED_CHECK
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.undo()
    assert prune(tiny[0], "--out", out, *args) == 0  # the directory still takes the run


def test_nothing_pruned_exits_3_with_the_reason_per_kind_of_site(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code = prune(tiny[0], "--out", out, "--pattern", "2:3", "--calib", tiny[1], *SMALL)
    assert code == EXIT_NOTHING_PRUNED == 3
    err = capsys.readouterr().err
    assert "nothing could be pruned with --pattern 2:3: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj " \
           "(12 sites) skipped: d_in = 32 is not divisible by M = 3" in err
    assert "down_proj (2 sites) skipped: d_in = 64 is not divisible by M = 3" in err
    assert "lm_head (1 site) ignored" in err and not out.exists()


def test_degenerate_calibration_is_warned_about(tiny, tmp_path, capsys):
    same = tmp_path / "same.txt"
    same.write_text(" the" * 400)
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, "--calib", same, *SMALL, "--seqlen", "300") == 0
    err = capsys.readouterr().err
    assert "warning: --seqlen 300 is above the model's max_position_embeddings (256)" in err
    assert f"warning: the calibration text {same} tokenizes to one token repeated" in err
    assert ("warning: model.layers.0.self_attn.q_proj+model.layers.0.self_attn.k_proj+model.layers.0.self_attn.v_proj: "
            "the calibration inputs are collinear") in err
    record = json.loads((out / RUN_FILE).read_text())
    assert any("collinear" in w for w in record["warnings"])
    rows = {r["name"]: r for r in record["report"]["sites"]}
    assert rows["model.layers.0.self_attn.q_proj"]["reason"].startswith("warning: the calibration inputs are")


def test_empty_calibration_text_suggests_no_seqlen(tiny, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert prune(tiny[0], "--out", tmp_path / "out", "--calib", empty, *SMALL) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "has 0 tokens, too few for one window of 32 tokens; use a longer text" in err and "--seqlen" not in err


# ------------------------------------------------------------------------------------------------ bad models
def _corrupt_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "llama",')


def _unknown_type(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    (d / "config.json").write_text(json.dumps(config))


def _t5(d: Path) -> None:
    import transformers

    shutil.rmtree(d)
    transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=300, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4, decoder_start_token_id=0,
    )).save_pretrained(d)


def _gpt2(d: Path) -> None:
    import transformers

    from swappass.lm.models import load_model

    _, tok = load_model(str(d))
    shutil.rmtree(d)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2,
                                                         n_positions=24)).save_pretrained(d)
    tok.save_pretrained(d)


@pytest.mark.parametrize("make, model_name, message", [
    (_corrupt_config, "model", "config.json is not valid JSON (Expecting"),
    (_unknown_type, "model", "config.json: model_type 'no-such-architecture' is not a model type transformers"),
    (lambda d: truncate(d / "model.safetensors"), "model",
     "model.safetensors is truncated: it has 76652 bytes, its header describes 153304"),
    (lambda d: (d / "fake.gguf").write_bytes((d / "model.safetensors").read_bytes()[:4000]), "model/fake.gguf",
     "is not a GGUF file (it does not start with the bytes 'GGUF')"),
    (lambda d: (d / "short.gguf").write_bytes(b"GGUF\x03\0\0\0" + b"\0" * 8), "model/short.gguf",
     "is truncated (16 bytes, shorter than a GGUF header)"),
    (lambda d: (d / "cut.gguf").write_bytes(b"GGUF\x03\0\0\0" + b"\x05" + b"\0" * 60), "model/cut.gguf",
     "could not load the model of"),
    (_t5, "model", "tokenizer, which swappass prune needs to calibrate from text; add the tokenizer files"),
    (_gpt2, "model", "--seqlen 32 is above the model's 24 positions"),
])
def test_bad_model_inputs_exit_2_naming_the_input(tiny, tmp_path, capsys, make, model_name, message):
    shutil.copytree(tiny[0], tmp_path / "model")
    make(tmp_path / "model")
    out = tmp_path / "out"
    assert prune(tmp_path / model_name, "--out", out, "--calib", tiny[1], *SMALL) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_eval_of_a_corrupt_model_exits_2(tiny, tmp_path, capsys):
    shutil.copytree(tiny[0], tmp_path / "model")
    _corrupt_config(tmp_path / "model")
    assert cli.main(["eval", str(tmp_path / "model"), "--text", str(tiny[1]), "--seqlen", "32"]) == cli.EXIT_BAD_INPUT
    assert "config.json is not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ SIGKILL
def _run_until(cmd: list[str], env: dict, kill_when) -> int:
    """Run ``cmd``; SIGKILL it as soon as ``kill_when()`` holds (polled every 2 ms). Its exit status (-9: killed)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        if kill_when():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return proc.returncode
        time.sleep(0.002)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 0, stderr
    return proc.returncode


def test_sigkill_at_random_points_gives_the_identical_result(tiny, args, straight, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "swappass", "prune", str(tiny[0]), "--out", str(out), *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ckpt = LevelCheckpoints(out / CHECKPOINT_DIR)
    rng = random.Random(16)

    def recorded() -> int:
        try:
            return ckpt.finished_levels()
        except Exception:  # the directory is being created
            return 0

    first = rng.randint(1, 3)
    delay = rng.uniform(0, 0.05)
    seen: list[float] = []

    def after_levels(k):
        def when():
            if recorded() >= k:
                seen.append(time.monotonic()) if not seen else None
                return time.monotonic() - seen[0] >= delay
            return False
        return when

    kills = []
    for k in (first, rng.randint(first + 1, LEVELS)):
        seen.clear()
        kills.append(_run_until(cmd, env, after_levels(k)))
        if (out / RUN_FILE).exists():
            break
    # one more kill while saving, if the staging folder shows up in time; then to the end
    kills.append(_run_until(cmd, env, lambda: (out / STAGING_DIR).exists()))
    if kills[-1] != 0:
        kills.append(_run_until(cmd, env, lambda: False))
    assert kills[0] == -signal.SIGKILL and kills[-1] == 0
    assert (out / RUN_FILE).exists() and not (out / CHECKPOINT_DIR).exists()
    assert_same_result(straight, out)
