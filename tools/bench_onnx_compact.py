"""Which compact storage of sparse ONNX weights loads in onnxruntime and shrinks the file, and what it costs.

Part 1 (``--formats``): one MatMul with a pruned K × N fp32 weight (2:4 along K, 60% and 90% unstructured),
stored as: dense initializer; ONNX ``sparse_initializer`` (int64 linear indices, int32 linear indices, int64
coordinates); bit mask + values rebuilt by ``NonZero``/``ScatterND``; and swappass's form (bit mask + values
rebuilt by ``CumSum``/``Gather``/``Where``, :mod:`swappass.onnx.compact`). For each: ONNX checker, whether
onnxruntime loads it and computes the right result, file size, session creation time, per-run time.

Part 2 (``--model smollm2-135m``): the real model pruned by magnitude at 2:4 and 60% per row, exported by
``swappass.export_onnx`` dense and with ``compact=True``: file size, export and verification time, onnxruntime
session creation and inference time (batch 1 × 128 tokens).

    PYTHONPATH=. python tools/bench_onnx_compact.py --formats
    PYTHONPATH=. python tools/bench_onnx_compact.py --model smollm2-135m
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from swappass.onnx.compact import SHARED_CONSTANTS, rebuild_nodes  # noqa: E402  (the implementation under test)


def pruned_weight(K: int, N: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    W = rng.standard_normal((K, N)).astype(np.float32)
    if kind == "2:4":  # blocks of 4 along K (the reduction axis of MatMul's B)
        blocks = W.reshape(K // 4, 4, N)
        np.put_along_axis(blocks, np.argsort(np.abs(blocks), axis=1)[:, :2, :], 0, axis=1)
        return blocks.reshape(K, N)
    W[rng.random((K, N)) < float(kind)] = 0
    return W


def graph(W_shape, nodes=(), inits=(), sparse=()):
    K, N = W_shape
    g = helper.make_graph(list(nodes) + [helper.make_node("MatMul", ["X", "W"], ["Y"])], "g",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", N])],
                          initializer=list(inits), sparse_initializer=list(sparse))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)  # ORT 1.30 reads IR ≤ 10


def fmt_dense(W):
    return graph(W.shape, inits=[numpy_helper.from_array(W, "W")])


def fmt_sparse(W, index_kind):
    flat = W.ravel()
    nz = np.flatnonzero(flat)
    if index_kind == "coords":
        idx = np.stack(np.unravel_index(nz, W.shape), 1).astype(np.int64)
    else:
        idx = nz.astype(index_kind)
    values, indices = numpy_helper.from_array(flat[nz], "W"), numpy_helper.from_array(idx, "")
    st = helper.make_sparse_tensor(values, indices, list(W.shape))
    return graph(W.shape, sparse=[st])


def fmt_scatter(W):
    keep = (W != 0).ravel()
    arrays = {"bits": np.packbits(keep), "vals": W.ravel()[keep], "sh": np.arange(8, dtype=np.uint8),
              "s7": np.array([7], np.uint8), "m1": np.array([-1], np.int64), "z": np.array([0], np.int64),
              "numel": np.array([W.size], np.int64), "shape": np.array(W.shape, np.int64)}
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()]
    nodes = [helper.make_node("Unsqueeze", ["bits", "m1"], ["b1"]),
             helper.make_node("BitShift", ["b1", "sh"], ["b2"], direction="LEFT"),
             helper.make_node("BitShift", ["b2", "s7"], ["b3"], direction="RIGHT"),
             helper.make_node("Reshape", ["b3", "m1"], ["b4"]),
             helper.make_node("Slice", ["b4", "z", "numel"], ["b5"]),
             helper.make_node("Cast", ["b5"], ["keep"], to=TensorProto.BOOL),
             helper.make_node("NonZero", ["keep"], ["nzT"]),
             helper.make_node("Transpose", ["nzT"], ["nz"], perm=[1, 0]),
             helper.make_node("ConstantOfShape", ["numel"], ["zeros"],
                              value=numpy_helper.from_array(np.zeros(1, np.float32))),
             helper.make_node("ScatterND", ["zeros", "nz", "vals"], ["flat"]),
             helper.make_node("Reshape", ["flat", "shape"], ["W"])]
    return graph(W.shape, nodes, inits)


def fmt_swappass(W):
    nodes, tensors = rebuild_nodes("W", W)
    shared = [numpy_helper.from_array(v, k) for k, v in SHARED_CONSTANTS.items()]
    return graph(W.shape, nodes, tensors + shared)


FORMATS = {
    "dense initializer": fmt_dense,
    "sparse_initializer int64 index": lambda W: fmt_sparse(W, np.int64),
    "sparse_initializer int32 index": lambda W: fmt_sparse(W, np.int32),
    "sparse_initializer int64 coords": lambda W: fmt_sparse(W, "coords"),
    "bits+values, NonZero/ScatterND": fmt_scatter,
    "bits+values, CumSum/Gather/Where (swappass)": fmt_swappass,
}


def time_runs(session, feeds, repeat=30):
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_formats(K: int, N: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, K)).astype(np.float32)
    print(f"## formats: one MatMul, W {K}×{N} fp32, X 4×{K}; onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    print("| sparsity | format | checker | loads+correct | size MB | vs dense | session ms | run ms "
          "| ops after ORT opt |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("2:4", "0.6", "0.9"):
            W = pruned_weight(K, N, kind, rng)
            ref = X @ W
            dense_size = None
            for name, fn in FORMATS.items():
                path = os.path.join(tmp, "m.onnx")
                onnx.save(fn(W), path)
                size = os.path.getsize(path)
                dense_size = dense_size or size
                try:
                    onnx.checker.check_model(path)
                    checker = "ok"
                except Exception as exc:
                    checker = "rejects: " + str(exc).split("\n")[0][:50]
                so = ort.SessionOptions()
                so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
                so.log_severity_level = 3
                try:
                    t = time.perf_counter()
                    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
                    create = time.perf_counter() - t
                    ok = np.allclose(sess.run(None, {"X": X})[0], ref, rtol=1e-4, atol=1e-4)
                    run = time_runs(sess, {"X": X})
                    optimized = onnx.load(so.optimized_model_filepath, load_external_data=False)
                    ops = sorted({n.op_type for n in optimized.graph.node})
                    loads = "yes" if ok else "WRONG RESULT"
                    row = f"{create * 1e3:.0f} | {run * 1e3:.3f} | {' '.join(ops)}"
                except Exception as exc:
                    loads, row = "no: " + str(exc).split("\n")[0][:60], "- | - | -"
                print(f"| {kind} | {name} | {checker} | {loads} | {size / 1e6:.2f} | {size / dense_size:.2f} | {row} |")


def bench_model(spec: str, seq: int) -> None:
    import torch

    import swappass as sp
    from swappass.cli.export import example_inputs_for
    from swappass.lm.models import load_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pruning_helper import magnitude_prune

    print(f"## {spec}: export dense vs compact; torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{os.cpu_count()} CPU cores")
    print("| pattern | storage | file MB | export s | verify s | max rel err (example / second) | ORT session s "
          f"| ORT run ms (1×{seq}) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for pattern in ("2:4", "0.6"):
            model, tok = load_model(spec)
            records = magnitude_prune(model, pattern)
            example = example_inputs_for(model, tok, batch=1, seq_len=12)
            for compact in (False, True):
                path = Path(tmp) / f"m{'_c' if compact else ''}.onnx"
                report = sp.export_onnx(model, example, path, masks=records, compact=compact, verbose=False)
                assert report.passed, report.failures()
                t = time.perf_counter()
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                create = time.perf_counter() - t
                ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, seq), dtype=np.int64)
                run = time_runs(sess, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, repeat=5)
                errs = " / ".join(f"{c.max_rel:.1e}" for c in report.checks)
                storage = "compact" if compact else "dense"
                print(f"| {pattern} | {storage} | {report.file_bytes / 1e6:.1f} | {report.export_seconds:.1f} | "
                      f"{report.verify_seconds:.1f} | {errs} | {create:.2f} | {run * 1e3:.1f} |")
                del sess
                path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", action="store_true", help="part 1: storage formats on one MatMul")
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("K", "N"))
    ap.add_argument("--model", default=None, help="part 2: a model spec for swappass.lm.models.load_model")
    ap.add_argument("--seq", type=int, default=128, help="tokens per inference run in part 2")
    args = ap.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, python {platform.python_version()}")
    if args.formats:
        bench_formats(*args.size)
    if args.model:
        bench_model(args.model, args.seq)


if __name__ == "__main__":
    main()
