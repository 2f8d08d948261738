#!/usr/bin/env bash
# The lead's GPU sessions on the lent H100 (no network there): the real model and data travel as ignored
# payload folders (the 94 MB GGUF split in two, each call carries one half, the machine keeps /tmp between calls).
#   stage "tests": CUDA test subset, the whole pass at 32 blocks, row-tile cost            carry: .payload_a
#   stage "quality": the quality tables on SmolLM2-135M (tools/bench_quality.py)          carry: .payload_b
#   stage "check": the Gram test that failed on the H100, the export and pass tests, Gram precision   carry: .payload_a
#   stage "gram": the Gram tests, the pass at 32 blocks with exact and TF32 Gram products     carry: .payload_a
#   stage "more": continue the quality tables (rows already done are skipped)             carry: nothing
set -uo pipefail
export PYTHONUNBUFFERED=1 SWAPPASS_CACHE=/tmp/swcache SWAPPASS_DATA=/tmp/sw/data PYTHONPATH=/tmp/site
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/sw "$SWAPPASS_CACHE/smollm2" /tmp/quality
stage=$1
if [ -d .payload_a ]; then cp -r .payload_a/* /tmp/sw/; fi
if [ -d .payload_b ]; then cp .payload_b/* /tmp/sw/; fi
if [ ! -d /tmp/site ] && ls /tmp/sw/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/sw/whl/*.whl
fi
gguf="$SWAPPASS_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ] && [ -f /tmp/sw/gguf_part_ab ]; then
  cat /tmp/sw/gguf_part_aa /tmp/sw/gguf_part_ab /tmp/sw/gguf_part_ac > "$gguf"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf" | sha256sum -c -
fi
case "$stage" in
tests)
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
  timeout 200 python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_kernels_triton.py tests/test_refine.py \
      tests/test_patterns_gram_warmstart.py tests/test_export.py tests/test_graph_pass.py 2>&1 | tee "$OUT/pytest.txt" | tail -6
  timeout 300 python3 tools/bench_pass.py --device cuda --layers 32 --iters 3 --json "$OUT/pass_l32_i3.json" 2>&1 \
      | tee "$OUT/pass.txt" | tail -12
  timeout 100 python3 tools/bench_row_tiles.py --device cuda --shapes 28672x4096 4096x14336 --iters 10 --repeat 2 \
      2>&1 | tee "$OUT/row_tiles.txt" | tail -8
  ;;
check)
  timeout 280 python3 -m pytest -q -rf --tb=short -p no:cacheprovider -m "not slow" \
      "tests/test_patterns_gram_warmstart.py::test_gram_from_half_inputs_on_cuda_is_float32_exact" \
      tests/test_graph_pass.py tests/test_export.py 2>&1 | tee "$OUT/pytest_check.txt" | tail -25
  timeout 120 python3 tools/check_gram_precision.py 2>&1 | tee "$OUT/gram_precision.txt"
  ;;
gram)
  timeout 60 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_patterns_gram_warmstart.py -k gram \
      2>&1 | tail -4
  for flag in "" "--gram-tf32"; do
    timeout 200 python3 tools/bench_pass.py --device cuda --layers 32 --iters 1 $flag \
        --json "$OUT/pass_l32_i1${flag:+_tf32}.json" 2>&1 | tail -10
  done
  ;;
quality|more)
  if [ -d .payload_b/quality ] && [ ! -f /tmp/quality/results.jsonl ]; then cp .payload_b/quality/* /tmp/quality/; fi
  python3 tools/bench_quality.py --device cuda --out /tmp/quality --time-budget "${BUDGET:-500}" \
      ${TABLES:-table2 figure1 new table1} 2>&1 | tee -a /tmp/quality/log.txt | tail -40
  cp /tmp/quality/* "$OUT"/ 2>/dev/null
  ;;
esac
