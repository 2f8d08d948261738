#!/usr/bin/env bash
# GPU sessions on the lent machine (no network there): the real model and data travel as ignored payload
# folders, since the 98 MB GGUF is over one call's 64 MiB: it is split in pieces (gguf_part_00, _01, ...), each
# call carries some, and the machine keeps /tmp between calls while it stays warm.
#   .payload_a: gguf_part_00, whl/ (gguf wheel), data/ (shared/data)      .payload_b: gguf_part_01, quality/
#
#   stage "tests":   CUDA test subset, the whole pass at 32 blocks (3 iterations)            carry: .payload_a
#   stage "quality": the quality tables on SmolLM2-135M (tools/bench_quality.py)           carry: .payload_b
#   stage "check":   the Gram tests, the export and pass tests, Gram precision              carry: .payload_a
#   stage "gram":    the Gram tests, the pass at 32 blocks with exact and TF32 Gram products carry: .payload_a
#   stage "more":    continue the quality tables (rows already done are skipped)            carry: nothing
#   stage "stash":   nothing but keeping the pieces carried in /tmp for the next call      carry: .payload_a
#   stage "kernels": CUDA tests, the bound-pruned loop against the dense loop on one 8B-shaped block, and the 2:4
#                    semi-structured matmul against dense (cuSPARSELt, CUTLASS)               carry: .payload_a
#   stage "pass":    the whole pass at 8B shapes, 8 blocks x 100 iterations (bound-pruned), and 2 blocks with the
#                    dense loop (SWAPPASS_GPU_BOUND=0) as the baseline of the same run       carry: .payload_b
#   stage "final_a": bound-pruned CUDA tests, bench_bounded_gpu, the pass 8 blocks bounded + 2 dense  carry: .payload_a
#   stage "final_b": SmolLM2's real pass on the GPU, dense loop vs bound-pruned (right after final_a) carry: .payload_b
#   stage "finish":  the quality rows still missing in .payload_b/quality/results.jsonl, then one finished row
#                    again in a fresh directory (the dense model and 60% Wanda + SparseSwaps) as a cross-check
#                    of the machine                                                          carry: .payload_b
set -uo pipefail
export PYTHONUNBUFFERED=1 SWAPPASS_CACHE=/tmp/swcache SWAPPASS_DATA=/tmp/sw/data PYTHONPATH=/tmp/site
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/sw "$SWAPPASS_CACHE/smollm2" /tmp/quality
stage=$1
for payload in .payload_a .payload_b; do
  if [ -d "$payload" ]; then cp -r "$payload"/* /tmp/sw/; fi
done
if [ ! -d /tmp/site ] && ls /tmp/sw/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/sw/whl/*.whl
fi
gguf="$SWAPPASS_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ] && [ -f /tmp/sw/gguf_part_00 ] && [ -f /tmp/sw/gguf_part_01 ]; then
  cat /tmp/sw/gguf_part_* > "$gguf"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf" | sha256sum -c - || rm -f "$gguf"
fi
need_model() {  # the model, and the finished quality rows carried in .payload_b/quality (once per machine)
  if [ ! -f "$gguf" ]; then echo "SmolLM2 GGUF incomplete (the machine went cold?): /tmp/sw holds $(ls /tmp/sw)"; exit 3; fi
  if [ -d /tmp/sw/quality ] && [ ! -f /tmp/quality/results.jsonl ]; then cp /tmp/sw/quality/* /tmp/quality/; fi
}
quality() {  # quality DIR TIMEOUT TABLES...: bench_quality.py into DIR; its records and log go to $OUT/NAME_*
  local dir=$1 limit=$2; shift 2
  timeout "$limit" python3 tools/bench_quality.py --device cuda --out "$dir" --time-budget $((limit - 30)) "$@" \
      2>&1 | tee -a "$dir/log.txt" | tail -40
  for f in results.jsonl sites.jsonl log.txt; do  # $OUT takes 8 files; results.md ends the log
    if [ -f "$dir/$f" ]; then cp "$dir/$f" "$OUT/$(basename "$dir")_$f"; fi
  done
}
case "$stage" in
kernels)
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)'
  timeout 240 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider -m "not slow" tests/kernels/test_triton_kernels.py \
      tests/refine/test_refine_mask.py tests/core/test_gram.py tests/kernels/test_unstructured_kernels.py 2>&1 \
      | tee "$OUT/pytest.txt" | tail -15
  timeout 200 python3 tools/bench_bounded_gpu.py --device cuda --iters 20 --json "$OUT/bounded.json" 2>&1 \
      | tee "$OUT/bounded.txt" | tail -8
  timeout 100 python3 tools/bench_semistructured.py --json "$OUT/semistructured.json" 2>&1 \
      | tee "$OUT/semistructured.txt" | tail -60
  ls -l /tmp/sw
  ;;
pass)
  timeout 360 python3 tools/bench_pass.py --device cuda --layers 8 --iters 100 --json "$OUT/pass_l8_bounded.json" \
      2>&1 | grep -v "^model\." | tee "$OUT/pass_bounded.txt" | tail -14
  SWAPPASS_GPU_BOUND=0 timeout 150 python3 tools/bench_pass.py --device cuda --layers 2 --iters 100 \
      --json "$OUT/pass_l2_dense.json" 2>&1 | grep -v "^model\." | tee "$OUT/pass_dense.txt" | tail -14
  ls -l /tmp/sw
  ;;
final_a)  # carry .payload_a: the bound-pruned loop's CUDA tests, one block side by side, the pass 8 + 2 blocks
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader
  timeout 90 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider -m "not slow" -k "bound" \
      tests/kernels/test_triton_kernels.py 2>&1 | tee "$OUT/pytest_bounded.txt" | tail -5
  timeout 120 python3 tools/bench_bounded_gpu.py --device cuda --iters 20 --json "$OUT/bounded.json" 2>&1 \
      | tee "$OUT/bounded.txt" | tail -8
  timeout 240 python3 tools/bench_pass.py --device cuda --layers 8 --iters 100 --json "$OUT/pass_l8_bounded.json" \
      2>&1 | grep -v "^model\." | tee "$OUT/pass_bounded.txt" | tail -14
  SWAPPASS_GPU_BOUND=0 timeout 110 python3 tools/bench_pass.py --device cuda --layers 2 --iters 100 \
      --json "$OUT/pass_l2_dense.json" 2>&1 | grep -v "^model\." | tee "$OUT/pass_dense.txt" | tail -14
  ls -l /tmp/sw
  ;;
final_b)  # carry .payload_b right after final_a: SmolLM2's real pass, dense device loop vs bound-pruned
  need_model
  timeout 500 python3 tools/bench_bounded_smollm2.py 2>&1 | grep -v Warning | tee "$OUT/smollm2_bounded.txt" | tail -8
  ;;
final_c)  # carry .payload_a: the merged tree's CUDA tests, and where the bound-pruned loop starts to pay
  timeout 200 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider -m "not slow" tests/kernels \
      tests/refine/test_refine_mask.py tests/graph/test_experts.py tests/graph/test_pass.py 2>&1 \
      | tee "$OUT/pytest_merged.txt" | tail -12
  timeout 200 python3 tools/bench_bounded_gpu.py --device cuda --widths 576,1024,1536,2048,3072,4096 --iters 20 \
      --json "$OUT/bounded_widths.json" 2>&1 | tee "$OUT/bounded_widths.txt" | tail -9
  ;;
final_d)  # carry .payload_b right after final_c: SmolLM2's pass with the width rule (auto) against the dense loop
  need_model
  sed -e 's/for flag in ("0", "1")/for flag in ("0", "auto")/' -e 's/res\["1"\]/res["auto"]/g' \
      tools/bench_bounded_smollm2.py > /tmp/bench_auto.py
  timeout 300 python3 /tmp/bench_auto.py 2>&1 | grep -v Warning | tail -4 | tee "$OUT/smollm2_auto.txt"
  ;;
stash)
  ls -l /tmp/sw
  ;;
tests)
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)'
  timeout 330 python3 -m pytest -q -rfE --tb=short -p no:cacheprovider -m "not slow" tests/kernels/test_triton_kernels.py \
      tests/refine/test_refine_mask.py tests/core/test_gram.py tests/kernels/test_unstructured_kernels.py \
      tests/graph/test_pass.py tests/onnx/test_export.py 2>&1 | tee "$OUT/pytest.txt" | tail -25
  timeout 200 python3 tools/bench_pass.py --device cuda --layers 32 --iters 3 --json "$OUT/pass_l32_i3.json" 2>&1 \
      | tee "$OUT/pass.txt" | tail -12
  ;;
check)
  timeout 280 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -m "not slow" \
      "tests/core/test_gram.py::test_gram_on_cuda_is_a_float32_gemm_by_default" \
      tests/graph/test_pass.py tests/onnx/test_export.py 2>&1 | tee "$OUT/pytest_check.txt" | tail -25
  timeout 120 python3 tools/check_gram_precision.py 2>&1 | tee "$OUT/gram_precision.txt"
  ;;
gram)
  timeout 60 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/core/test_gram.py \
      2>&1 | tail -4
  for flag in "" "--gram-tf32"; do
    timeout 200 python3 tools/bench_pass.py --device cuda --layers 32 --iters 1 $flag \
        --json "$OUT/pass_l32_i1${flag:+_tf32}.json" 2>&1 | tail -10
  done
  ;;
quality|more)
  need_model
  quality /tmp/quality "${BUDGET:-530}" ${TABLES:-table2 figure1 new table1}
  ;;
finish)
  need_model
  quality /tmp/quality "${BUDGET:-420}" ${TABLES:-new}
  mkdir -p /tmp/xcheck
  quality /tmp/xcheck 140 figure1
  ;;
esac
