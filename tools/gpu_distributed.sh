#!/usr/bin/env bash
# Multi-GPU session for issue 8 (rows across ranks), on a machine with >= 4 GPUs (e.g. nvidia-h100-x4):
# tests, the example under torchrun with NCCL against one GPU (files compared), the cost of the row tiles on one
# GPU, and the refinement's speed-up with 1, 2 and 4 GPUs at LLaMA-3.1-8B shapes (identity to 1 GPU checked).
# Usage (device machine, repository root): OUT=/some/dir bash tools/gpu_distributed.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'nccl', torch.cuda.nccl.version())"
python3 -m pytest -q -p no:cacheprovider tests/refine/test_distributed.py tests/refine/test_refine_mask.py tests/kernels/test_triton_kernels.py \
    2>&1 | tee "$OUT/pytest.txt" | tail -3
# the example with NCCL on 2 GPUs against 1 GPU: the same weights, masks and report
python3 -c "
import torch; from transformers import LlamaConfig, LlamaForCausalLM; torch.manual_seed(0)
LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2)).save_pretrained('$OUT/tiny')"
ARGS="$OUT/tiny --calib random --nsamples 8 --seqlen 64 --iters 30 --no-progress"
torchrun --standalone --nproc-per-node 2 examples/distributed_prune.py $ARGS --out "$OUT/ex_two" > "$OUT/example_two.txt" 2>&1
python3 examples/distributed_prune.py $ARGS --out "$OUT/ex_one" > "$OUT/example_one.txt" 2>&1
python3 -c "
import json, torch; from safetensors.torch import load_file; from swappass.core.masks import load_masks
a, b = load_file('$OUT/ex_one/model.safetensors'), load_file('$OUT/ex_two/model.safetensors')
ma, mb = load_masks('$OUT/ex_one/swappass_masks.safetensors'), load_masks('$OUT/ex_two/swappass_masks.safetensors')
ra, rb = (json.load(open(f'$OUT/{d}/swappass_report.json')) for d in ('ex_one', 'ex_two'))
strip = lambda r: [{k: v for k, v in s.items() if k != 'seconds'} for s in r['sites']]
print('example NCCL 2 GPUs == 1 GPU: weights', a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
      'masks', all(torch.equal(ma[k].mask, mb[k].mask) for k in ma), 'report', strip(ra) == strip(rb))
" 2>&1 | tee "$OUT/example_compare.txt"
python3 tools/bench_row_tiles.py --device cuda --shapes 6144x4096 28672x4096 4096x14336 --iters 20 \
    > "$OUT/bench_row_tiles.txt" 2>&1; cat "$OUT/bench_row_tiles.txt"
python3 tools/bench_distributed.py --gpus 1 2 4 --iters 100 --patterns 0.6 2:4 --json "$OUT/bench_distributed.json" \
    > "$OUT/bench_distributed.txt" 2>&1; tail -25 "$OUT/bench_distributed.txt"
