"""The ``swappass`` command end to end on a tiny LLaMA saved to a temporary directory (CPU, seconds)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from cli_helpers import SMALL, corpus
from safetensors.torch import load_file

import swappass as sp
from swappass import cli
from swappass.cli.checkpoint import LevelCheckpoints
from swappass.cli.output_dir import CHECKPOINT_DIR, RUN_FILE
from swappass.core.masks import MASKS_FILE, load_masks
from swappass.lm import calibration

REPO = Path(__file__).resolve().parents[2]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below ``directory``."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def prune(*args: str) -> int:
    return cli.main(["prune", *map(str, args)])


# ------------------------------------------------------------------------------------------------ end to end
def test_prune_save_reload_eval_export(tiny, tmp_path, capsys):
    model_dir, text = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--pattern", "2:4", "--calib", text, *SMALL, "--plot", "--onnx") == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "14 sites under model.layers" in printed and "\n1.mlp.down_proj " in printed  # the 80-column table
    assert "mean relative error reduction" in printed and "PASSED" in printed  # and the ONNX report
    table = printed.split(" Linear weights pruned")[0].splitlines()[:-1]  # up to the totals line
    assert table[-1].startswith("14 pruned") and max(len(line) for line in table) <= 80
    assert "Loading weights" not in captured.err and "Writing model shards" not in captured.err  # no library bars
    assert json.loads((out / "swappass.json").read_text())["threads"]["pruning"] >= 1

    # plain transformers reloads the directory; the masks file describes the zeros exactly
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer("the city river").input_ids == transformers.AutoTokenizer.from_pretrained(model_dir)(
        "the city river").input_ids
    params = dict(model.named_parameters())
    masks = load_masks(out / MASKS_FILE)
    assert len(masks) == 14 and "lm_head.weight" not in masks
    dense = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    dense_params = dict(dense.named_parameters())
    for name, rec in masks.items():
        rec.check()  # 2:4 holds
        assert torch.equal(params[name].detach(), dense_params[name].detach() * rec.mask), name
    assert torch.equal(params["lm_head.weight"], dense_params["lm_head.weight"])

    # the recipe and report
    record = json.loads((out / RUN_FILE).read_text())
    assert record["complete"] and record["recipe"]["pattern"] == "2:4" and record["recipe"]["calib_sha256"]
    assert record["command"].startswith("swappass prune ") and "--onnx" in record["command"]
    assert {"swappass", "torch", "transformers"} <= set(record["versions"])
    rows = {r["name"]: r for r in record["report"]["sites"]}
    assert rows["model.layers.0.self_attn.o_proj"]["status"] == "pruned" and rows["lm_head"]["status"] == "ignored"
    assert record["onnx"]["passed"] is True and (out / "model.onnx").is_file()
    assert {"model.safetensors", MASKS_FILE, "reduction.png", "model.onnx"} <= set(record["files"])
    assert (out / "reduction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / CHECKPOINT_DIR).exists()

    # the CLI gives exactly what the Python API gives on the same calibration windows
    from swappass.lm.models import load_model

    api_model, api_tok = load_model(str(model_dir))
    windows = calibration.calibration_set(str(text), api_tok, nsamples=4, seqlen=32, seed=0)
    sp.sparsify(api_model, windows, pattern="2:4", max_iters=4, progress=False)
    for name, p in api_model.named_parameters():
        assert torch.equal(p.detach(), params[name].detach()), name

    # eval, alone and against the dense model
    assert cli.main(["eval", str(out), "--text", str(text), "--seqlen", "64", "--max-windows", "3",
                     "--no-progress", "--json", str(tmp_path / "ppl.json")]) == 0
    alone = json.loads((tmp_path / "ppl.json").read_text())
    assert alone["windows"] == 3 and math.isfinite(alone["perplexity"]) and alone["perplexity"] > 1
    assert cli.main(["eval", str(out), "--text", str(text), "--seqlen", "64", "--max-windows", "3", "--compare",
                     str(model_dir), "--no-progress", "--json", str(tmp_path / "cmp.json")]) == 0
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-6)  # float64 vs float32 softmax
    assert cmp["kl_divergence"] > 0 and 0 < cmp["top1_agreement"] < 1 and cmp["tokens"] == 3 * 63
    assert cli.main(["eval", str(model_dir), "--text", str(text), "--seqlen", "64", "--max-windows", "3",
                     "--compare", str(model_dir), "--no-progress", "--json", str(tmp_path / "self.json")]) == 0
    same = json.loads((tmp_path / "self.json").read_text())
    assert same["kl_divergence"] == pytest.approx(0, abs=1e-9) and same["top1_agreement"] == 1.0

    # the same command again: nothing recomputed, nothing rewritten except swappass.json (ONNX reused)
    before = snapshot(out)
    assert prune(model_dir, "--out", out, "--pattern", "2:4", "--calib", text, *SMALL, "--onnx") == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != RUN_FILE} == {k: v for k, v in before.items() if k != RUN_FILE}
    assert "already holds this run" in capsys.readouterr().err




# ------------------------------------------------------------------------------------------------ resume
def test_interrupted_run_resumes_to_the_identical_model(tiny, tmp_path, monkeypatch):
    model_dir, _ = tiny
    args = [model_dir, "--pattern", "0.5", "--calib", "self", *SMALL]
    assert prune(*args, "--out", tmp_path / "straight") == 0

    saved = []
    real_save = LevelCheckpoints.save_level

    def save_then_fail(self, state):
        real_save(self, state)
        saved.append(state.level)
        if state.level == 3:
            raise KeyboardInterrupt  # the user presses Ctrl-C right after level 3 was written

    monkeypatch.setattr(LevelCheckpoints, "save_level", save_then_fail)
    out = tmp_path / "resumed"
    assert prune(*args, "--out", out) == cli.EXIT_INTERRUPTED
    assert saved == [0, 1, 2, 3] and not (out / RUN_FILE).exists()
    ckpt = LevelCheckpoints(out / CHECKPOINT_DIR)
    assert ckpt.finished_levels() == 4 and ckpt.load_calibration() is not None

    monkeypatch.setattr(LevelCheckpoints, "save_level", real_save)
    pruned_levels = []
    import swappass.graph.sequential as pipeline

    real_convert = pipeline.convert_groups

    def convert_and_count(prepared, groups, *a, **k):
        pruned_levels.extend({g.level for g in groups})
        return real_convert(prepared, groups, *a, **k)

    monkeypatch.setattr(pipeline, "convert_groups", convert_and_count)
    assert prune(*args, "--out", out) == 0
    assert pruned_levels == [4, 5, 6, 7]  # levels 0-3 were restored, not pruned again
    record = json.loads((out / RUN_FILE).read_text())
    assert record["resumed_levels"] == 4 and not (out / CHECKPOINT_DIR).exists()

    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = load_masks(tmp_path / "straight" / MASKS_FILE), load_masks(out / MASKS_FILE)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k].mask, mb[k].mask) for k in ma)
    straight = json.loads((tmp_path / "straight" / RUN_FILE).read_text())["report"]["sites"]
    keys = ("name", "status", "loss_warm", "loss_final", "swaps", "iters", "sparsity", "level", "tokens")
    assert [{k: r[k] for k in keys} for r in straight] == [{k: r[k] for k in keys} for r in record["report"]["sites"]]






# ------------------------------------------------------------------------------------------------ calibration




def test_self_calibration_cli_run(tiny, tmp_path):
    model_dir, _ = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--pattern", "4:8", "--calib", "self", "--warm-start", "ria", *SMALL) == 0
    record = json.loads((out / RUN_FILE).read_text())
    assert record["recipe"]["calib"] == "self" and record["calibration"].startswith("sequences sampled")
    assert record["recipe"]["sample_precision"] == "auto"
    assert record["recipe"]["batch_size"] == 4  # auto: the 4 × 32 tokens in one forward pass
    assert all(r["tokens"] == 4 * 32 for r in record["report"]["sites"] if r["status"] == "pruned")


@pytest.mark.parametrize("bad, message", [
    (["--batch-size", "many"], "expected a number of sequences or 'auto', got 'many'"),
    (["--sample-precision", "fp8"], "invalid choice: 'fp8'"),
])
def test_unparsable_options_exit_2(tiny, tmp_path, capsys, bad, message):
    model_dir, text = tiny
    with pytest.raises(SystemExit) as exc:
        prune(model_dir, "--out", tmp_path / "out", "--calib", text, *SMALL, *bad)
    assert exc.value.code == cli.EXIT_BAD_INPUT and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_size_auto_fills_2048_tokens_per_pass():
    from swappass.cli.recipe import AUTO_BATCH_TOKENS, PruneOptions, calibration_batch_size

    def batch(**kw):
        return calibration_batch_size(PruneOptions(model="m", out=Path("o"), **kw))

    assert AUTO_BATCH_TOKENS == 2048
    assert batch(nsamples=128, seqlen=2048) == 1  # the default calibration: one sequence per pass, as before
    assert batch(nsamples=16, seqlen=128) == 16 and batch(nsamples=100, seqlen=128) == 16
    assert batch(nsamples=3, seqlen=128) == 3 and batch(nsamples=8, seqlen=4096) == 1
    assert batch(nsamples=16, seqlen=128, batch_size=2) == 2  # a given count stands


def test_wikitext2_calibration_and_its_absence(tiny, tmp_path, monkeypatch, capsys):
    from swappass.lm import data
    from swappass.lm.models import load_model

    _, tok = load_model(str(tiny[0]))
    windows = calibration.calibration_set("wikitext2", tok, nsamples=2, seqlen=16, seed=0)
    direct = data.calibration_windows(tok, data.wikitext2_path("valid"), nsamples=2, seqlen=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(windows, direct))

    monkeypatch.setenv("SWAPPASS_DATA", str(tmp_path))  # a data directory without WikiText-2
    out = tmp_path / "out"
    assert prune(tiny[0], "--out", out, *SMALL) == cli.EXIT_BAD_INPUT  # --calib defaults to wikitext2
    err = capsys.readouterr().err
    assert "--calib wikitext2" in err and "--calib self" in err and not out.exists()




# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("bad, message", [
    (["--pattern", "2:x"], "--pattern '2:x'"),
    (["--pattern", "1.5"], "--pattern '1.5'"),
    (["--pattern", "5:4"], "--pattern '5:4'"),
    (["--nsamples", "0"], "--nsamples must be at least 1"),
    (["--seqlen", "1"], "--seqlen must be at least 2"),
    (["--iters", "-1"], "--iters must be at least 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--calib", "no_such_file.txt"], "no such file"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nonsense"], "--device"),
    (["--targets", "no_such_layer"], "matched no prunable Linear site"),
    (["--refit", "sparsegpt"], "refit='sparsegpt' writes SparseGPT's own updated weights"),
    (["--refine", "dsnot", "--pattern", "unstructured:0.5"], "refine='dsnot' keeps every row's kept count"),
])
def test_bad_options_exit_2_and_write_nothing(tiny, tmp_path, capsys, bad, message):
    model_dir, text = tiny
    out = tmp_path / "out"
    code = prune(model_dir, "--out", out, "--calib", text, *SMALL, *bad)
    assert code == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("model, message", [
    ("./no/such/model", "does not exist"),
    ("smollm2-999m", "alias (smollm2-135m)"),
])
def test_unknown_model_exits_2(tmp_path, capsys, monkeypatch, model, message):
    monkeypatch.setattr("swappass.lm.models.hub_reachable", lambda timeout=3.0: False)
    out = tmp_path / "out"
    assert prune(model, "--out", out, "--calib", "self", *SMALL) == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not out.exists()




def test_text_too_short_for_one_window(tiny, tmp_path, capsys):
    model_dir, _ = tiny
    short = tmp_path / "short.txt"
    short.write_text("the city river tower\n")
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", short, *SMALL) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "too few for one window of 32 tokens" in err and "--seqlen" in err
    assert not out.exists()
    assert cli.main(["eval", str(model_dir), "--text", str(short), "--seqlen", "64"]) == cli.EXIT_BAD_INPUT
    assert "fewer than one window" in capsys.readouterr().err


def test_output_directory_of_another_run_is_refused_unless_overwrite(tiny, tmp_path, capsys):
    model_dir, text = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", text, "--pattern", "2:4", *SMALL) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert prune(model_dir, "--out", out, "--calib", text, "--pattern", "0.6", *SMALL) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "different recipe" in err and "pattern: 'row:0.6' here, '2:4' there" in err and "--overwrite" in err
    assert snapshot(out) == before  # nothing overwritten

    assert prune(model_dir, "--out", out, "--calib", text, "--pattern", "0.6", *SMALL, "--overwrite") == 0
    record = json.loads((out / RUN_FILE).read_text())
    assert record["recipe"]["pattern"] == "row:0.6"
    rec = next(iter(load_masks(out / MASKS_FILE).values()))
    assert rec.pattern == "row:0.6"


def test_unfinished_run_of_another_recipe_is_refused(tiny, tmp_path, capsys, monkeypatch):
    model_dir, text = tiny
    out = tmp_path / "out"

    def fail(self, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(LevelCheckpoints, "save_level", fail)
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL) == cli.EXIT_INTERRUPTED
    before = snapshot(out)
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--seed", "1") == cli.EXIT_BAD_INPUT
    assert "an unfinished run with a different recipe (seed: 1 here, 0 there)" in capsys.readouterr().err
    assert snapshot(out) == before


def test_foreign_directory_is_never_touched(tiny, tmp_path, capsys):
    model_dir, text = tiny
    before = snapshot(model_dir)
    for extra in ([], ["--overwrite"]):
        assert prune(model_dir, "--out", model_dir, "--calib", text, *SMALL, *extra) == cli.EXIT_BAD_INPUT
        assert "holds no swappass run" in capsys.readouterr().err
    assert snapshot(model_dir) == before


def test_plot_without_matplotlib_fails_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    model_dir, text = tiny
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--plot") == cli.EXIT_BAD_INPUT
    assert "plots need matplotlib: pip install 'swappass[plot]'" in capsys.readouterr().err
    assert not out.exists()


def test_eval_bad_input(tiny, tmp_path, capsys):
    model_dir, text = tiny
    assert cli.main(["eval", str(tmp_path / "missing"), "--text", str(text)]) == cli.EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["eval", str(model_dir), "--text", str(tmp_path / "none.txt")]) == cli.EXIT_BAD_INPUT
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["eval", str(model_dir), "--text", str(text), "--max-windows", "0"]) == cli.EXIT_BAD_INPUT
    assert "--max-windows must be at least 1" in capsys.readouterr().err


def test_failed_onnx_verification_exits_1_and_is_recorded(tiny, tmp_path, capsys, monkeypatch):
    import swappass.cli.prune as pruned_dir  # the prune job, where it calls the export job

    model_dir, text = tiny
    out = tmp_path / "out"
    real = pruned_dir.export_pruned_dir

    def export_with_a_tight_tolerance(model_dir, path, **kw):
        return real(model_dir, path, atol=0.0, rtol=0.0, **kw)  # onnxruntime never matches PyTorch exactly

    monkeypatch.setattr(pruned_dir, "export_pruned_dir", export_with_a_tight_tolerance)
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--onnx") == cli.EXIT_FAILED_CHECK
    assert "failed verification" in capsys.readouterr().err
    record = json.loads((out / RUN_FILE).read_text())
    assert record["onnx"]["passed"] is False and record["onnx"]["failures"]
    monkeypatch.setattr(pruned_dir, "export_pruned_dir", real)  # the same command again exports again
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--onnx") == 0
    assert json.loads((out / RUN_FILE).read_text())["onnx"]["passed"] is True


def test_ignore_adds_to_the_default_selection(tiny, tmp_path):
    model_dir, text = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--ignore", "down_proj,o_proj",
                 "--targets", r"re:model\.layers\.0\.", "--targets", "lm_head") == 0
    rows = {r["name"]: r for r in json.loads((out / RUN_FILE).read_text())["report"]["sites"]}
    assert rows["lm_head"]["status"] == "ignored"  # --ignore never re-enables the output projection
    assert rows["model.layers.0.mlp.down_proj"]["reason"] == "matched ignore 'down_proj'"
    assert rows["model.layers.1.self_attn.q_proj"]["reason"] == "not matched by targets"
    assert {n for n, r in rows.items() if r["status"] == "pruned"} == {
        f"model.layers.0.{p}" for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "mlp.gate_proj", "mlp.up_proj")
    }


def test_non_finite_activations_are_reported(tiny, tmp_path, capsys, monkeypatch):
    import swappass.cli.prune as pipeline  # the prune job, where it calls the pass
    from swappass import NonFiniteActivationError

    def nan_everywhere(*a, **k):
        raise NonFiniteActivationError("model.layers.0.self_attn.q_proj+k_proj+v_proj: NaN in the inputs")

    monkeypatch.setattr(pipeline, "sparsify", nan_everywhere)
    assert prune(tiny[0], "--out", tmp_path / "out", "--calib", tiny[1], *SMALL) == cli.EXIT_BAD_INPUT
    assert "q_proj+k_proj+v_proj: NaN in the inputs; with --dtype float16/bfloat16" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ refine / refit
def test_refine_and_refit_reach_sparsify_only_when_not_default(tiny, tmp_path, monkeypatch):
    import swappass.cli.prune as pipeline  # the prune job, where it calls the pass

    model_dir, text = tiny
    seen = []
    real = pipeline.sparsify

    def sparsify(model, calib, pattern="0.6", warm_start="wanda", max_iters=100, targets=None, ignore=None,
                 sequential=True, device=None, backend="auto", *, refine="swaps", refit=False, **kw):
        seen.append({"refine": refine, "refit": refit})
        return real(model, calib, pattern, warm_start, max_iters, targets, ignore, sequential, device, backend, **kw)

    monkeypatch.setattr(pipeline, "sparsify", sparsify)
    assert prune(model_dir, "--out", tmp_path / "a", "--calib", text, *SMALL) == 0
    assert prune(model_dir, "--out", tmp_path / "b", "--calib", text, *SMALL, "--refine", "dsnot",
                 "--refit", "lstsq") == 0
    assert seen == [{"refine": "swaps", "refit": False}, {"refine": "dsnot", "refit": "lstsq"}]
    recipe = json.loads((tmp_path / "b" / RUN_FILE).read_text())["recipe"]
    assert recipe["refine"] == "dsnot" and recipe["refit"] == "lstsq"


@pytest.mark.parametrize("flags", [
    ["--pattern", "0.5", "--refine", "dsnot"],
    ["--pattern", "0.5", "--refit", "lstsq", "--onnx"],
    ["--pattern", "2:4", "--warm-start", "sparsegpt", "--refine", "none", "--refit", "sparsegpt"],
])
def test_refine_and_refit_end_to_end(tiny, tmp_path, flags):
    model_dir, text = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, *flags) == 0
    record = json.loads((out / RUN_FILE).read_text())
    rows = [r for r in record["report"]["sites"] if r["status"] == "pruned"]
    refine = flags[flags.index("--refine") + 1] if "--refine" in flags else "swaps"
    refit = flags[flags.index("--refit") + 1] if "--refit" in flags else "none"
    assert record["recipe"]["refine"] == refine and record["recipe"]["refit"] == refit
    params = dict(transformers.AutoModelForCausalLM.from_pretrained(out).named_parameters())
    dense = dict(transformers.AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    changed = 0
    for name, rec in load_masks(out / MASKS_FILE).items():
        rec.check()
        w = params[name].detach()
        assert not w[~rec.mask].any(), name  # exactly zero where pruned, refit or not
        changed += not torch.equal(w, dense[name].detach() * rec.mask)
    if refit == "none":
        assert changed == 0  # mask-only methods keep the kept weights
        if refine == "dsnot":  # DSnoT refines the attention sites only (its reference's skip_layer="mlp")
            assert {r["refine"] for r in rows if ".self_attn." in r["name"]} == {"dsnot"}
            assert {r["refine"] for r in rows if ".mlp." in r["name"]} == {"none"}
    else:
        assert changed == len(rows)
        assert all(r["refit"] == refit and r["loss_refit"] is not None for r in rows)
    if "--onnx" in flags:
        assert record["onnx"]["passed"]  # the audit accepts refitted kept values


def test_resume_with_a_refit_restores_the_refitted_weights(tiny, tmp_path, monkeypatch):
    model_dir, text = tiny
    args = [model_dir, "--pattern", "0.5", "--refit", "lstsq", "--calib", text, *SMALL]
    assert prune(*args, "--out", tmp_path / "straight") == 0
    real_save = LevelCheckpoints.save_level

    def save_then_fail(self, state):
        real_save(self, state)
        if state.level == 2:
            assert state.weights  # the refitted values are part of the checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(LevelCheckpoints, "save_level", save_then_fail)
    out = tmp_path / "resumed"
    assert prune(*args, "--out", out) == cli.EXIT_INTERRUPTED
    monkeypatch.setattr(LevelCheckpoints, "save_level", real_save)
    assert prune(*args, "--out", out) == 0
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ plot, entry point


def test_python_dash_m_entry_point_and_help(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "swappass", "prune", "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert res.returncode == 0 and "--calib" in res.stdout and "--onnx" in res.stdout
    res = subprocess.run([sys.executable, "-m", "swappass", "prune", "x", "--out", "o", "--pattern", "3:2",
                          "--calib", "self"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 2 and "--pattern '3:2'" in res.stderr and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ real model
@pytest.mark.slow
def test_gguf_file_prunes_saves_and_reloads_without_gguf(tmp_path):
    from swappass.lm.models import fetch_smollm2

    gguf = fetch_smollm2()
    text = tmp_path / "corpus.txt"
    text.write_text(corpus(400))
    out = tmp_path / "out"
    assert prune(gguf, "--out", out, "--targets", r"re:model\.layers\.0\.self_attn\.", "--calib", text,
                 "--nsamples", "2", "--seqlen", "16", "--iters", "1", "--no-progress") == 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float checkpoint: loads without the gguf package
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    masks = load_masks(out / MASKS_FILE)
    assert len(masks) == 4
    for name, rec in masks.items():
        assert not dict(model.named_parameters())[name][~rec.mask].any()


def test_gram_tf32_flag_is_recorded(tiny, tmp_path):
    """The flag reaches the recipe and the pass (that it changes nothing on the CPU: tests/core/test_gram.py)."""
    model_dir, text = tiny
    assert prune(model_dir, "--out", tmp_path, "--pattern", "0.5", "--calib", text, *SMALL, "--device", "cpu",
                 "--gram-tf32") == 0
    record = json.loads((tmp_path / RUN_FILE).read_text())
    assert record["recipe"]["gram_tf32"] is True and record["report"]["settings"]["gram_tf32"] is True


def test_calibration_order_reaches_the_pass_and_the_recipe(tiny, tmp_path, capsys):
    model_dir, text = tiny
    out = tmp_path / "out"
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL, "--calibration-order", "block") == 0
    record = json.loads((out / RUN_FILE).read_text())
    assert record["recipe"]["calibration_order"] == "block"
    assert record["report"]["settings"]["calibration_order"] == "block" and record["report"]["settings"]["levels"] == 2
    capsys.readouterr()
    assert prune(model_dir, "--out", out, "--calib", text, *SMALL) == cli.EXIT_BAD_INPUT  # the default is "level"
    assert "calibration_order: 'level' here, 'block' there" in capsys.readouterr().err
