#!/usr/bin/env bash
# One GPU session for the swap-search kernels: correctness on CUDA, tile sweep, swap benchmark at
# LLaMA-3.1-8B shapes (naive vs torch vs Triton/Gluon), and whole-layer refinement timings.
# Usage (device machine): OUT=/some/dir bash tools/gpu_kernels.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py tests/test_refine.py 2>&1 | tee "$OUT/pytest.txt" | tail -4
python3 tools/tune_triton.py --dims 4096 14336 --json "$OUT/tune.json" > "$OUT/tune.txt" 2>&1
grep -E "failed|same=False" "$OUT/tune.txt"; sed -n '/top configurations/,$p' "$OUT/tune.txt"
python3 tools/bench_swap.py --device cuda --shapes llama3-8b --naive-rows 16 --torch-rows 64 --json "$OUT/bench_swap_llama.json" > "$OUT/bench_swap.txt" 2>&1
tail -16 "$OUT/bench_swap.txt"
python3 tools/bench_refine_device.py --device cuda --shapes 4096x4096 4096x14336 --patterns 0.6 2:4 --iters 100 --torch-iters 2 --json "$OUT/bench_refine.json" 2>&1 | tee "$OUT/bench_refine.txt"
