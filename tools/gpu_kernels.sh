#!/usr/bin/env bash
# GPU session for the swap-search kernels (issue 6): CUDA tests, tile sweep of the Gluon kernel, and the swap
# benchmark at LLaMA-3.1-8B shapes (naive vs torch vs Triton vs Gluon) with the sweep's best configuration.
# Usage (device machine): OUT=/some/dir bash tools/gpu_kernels.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers, onnxruntime; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'onnxruntime', onnxruntime.__version__)"
python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/kernels/test_triton_kernels.py tests/refine/test_refine_mask.py \
    tests/graph/test_pass.py tests/onnx/test_export.py 2>&1 | tee "$OUT/pytest.txt" | tail -5
python3 tools/tune_triton.py --dims 4096 14336 --variants gluon-p gluon --json "$OUT/tune.json" \
    --best-env "$OUT/best_config.txt" > "$OUT/tune.txt" 2>&1
grep -E "failed|same=False" "$OUT/tune.txt"; sed -n '/top configurations/,$p' "$OUT/tune.txt"
export SWAPPASS_GLUON_CONFIG=$(cat "$OUT/best_config.txt"); echo "SWAPPASS_GLUON_CONFIG=$SWAPPASS_GLUON_CONFIG"
python3 tools/bench_swap.py --device cuda --shapes llama3-8b --naive-rows 16 --torch-rows 64 \
    --json "$OUT/bench_swap_llama.json" > "$OUT/bench_swap.txt" 2>&1
tail -24 "$OUT/bench_swap.txt"
