"""SmolLM2-135M's real pass on a GPU (60% per row, 100 iterations, 128 x 2048 WikiText-2 tokens): the dense device
loop (SWAPPASS_GPU_BOUND=0) against the bound-pruned loop, side by side in one run; the masks must be identical.

    python tools/bench_bounded_smollm2.py
"""
import os, sys, time, json, torch
sys.path.insert(0, "."); import swappass as sp
from swappass.lm import data
from swappass.lm.models import load_model
model, tok = load_model("smollm2-135m", dtype=torch.float32, device="cuda")
calib = data.calibration_windows(tok, nsamples=128, seqlen=2048, seed=0)
import copy
res = {}
for flag in ("0", "1"):
    os.environ["SWAPPASS_GPU_BOUND"] = flag
    m = copy.deepcopy(model); torch.cuda.synchronize(); t = time.perf_counter()
    m, rep = sp.sparsify(m, calib, pattern="0.6", max_iters=100, batch_size=8, progress=False)
    torch.cuda.synchronize()
    res[flag] = (time.perf_counter() - t, sum(r.seconds for r in rep.pruned), {r.param: r.mask() for r in rep.pruned})
    print("bound", flag, "pass", round(res[flag][0], 1), "s, prune compute", round(res[flag][1], 1), "s", flush=True)
same = all(torch.equal(res["0"][2][k], res["1"][2][k]) for k in res["0"][2])
print(json.dumps({"dense_pass_s": res["0"][0], "bounded_pass_s": res["1"][0], "dense_prune_s": res["0"][1],
                  "bounded_prune_s": res["1"][1], "same_masks": same}))
