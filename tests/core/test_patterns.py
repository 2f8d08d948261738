import pytest
import torch

import swappass as sp
from swappass.core.patterns import NMSparsity, RowSparsity, parse_pattern


# ---------------------------------------------------------------- patterns
@pytest.mark.parametrize(
    "spec, expected",
    [
        (0.6, RowSparsity(0.6)),
        ("0.6", RowSparsity(0.6)),
        ("row:0.6", RowSparsity(0.6)),
        ("60%", RowSparsity(0.6)),
        ("2:4", NMSparsity(2, 4)),
        (" 4 : 8 ", NMSparsity(4, 8)),
    ],
)
def test_parse_pattern(spec, expected):
    assert parse_pattern(spec) == expected


@pytest.mark.parametrize("spec", ["5:4", "0:4", "4:4", 1.2, -0.1, "1.0", "abc", "row:x", True, None, "2:0"])
def test_parse_pattern_rejects_nonsense(spec):
    with pytest.raises(ValueError):
        parse_pattern(spec)


def test_kept_per_row_and_shape_errors():
    assert RowSparsity(0.6).kept_per_row(576) == round(576 * 0.4)
    assert NMSparsity(2, 4).kept_per_row(16) == 8
    with pytest.raises(ValueError, match="not divisible by M = 4"):
        NMSparsity(2, 4).check_shape(3, 10, where="blk.0.q")
    with pytest.raises(ValueError, match="keeps no weight"):
        RowSparsity(0.99).check_shape(3, 10)


def test_mask_feasibility_messages():
    pat = NMSparsity(2, 4)
    mask = torch.tensor([[True, True, False, False, True, False, True, False]])
    assert pat.is_feasible(mask)
    mask[0, 0] = False
    assert not pat.is_feasible(mask)
    with pytest.raises(ValueError, match="row 0, block 0"):
        pat.check_mask(mask)
    row = RowSparsity(0.5)
    with pytest.raises(ValueError, match="row 0 keeps 3"):
        row.check_mask(mask)


# ---------------------------------------------------------------- Gram
def test_gram_matches_xxt_any_leading_shape():
    torch.manual_seed(0)
    xs = [torch.randn(2, 5, 7), torch.randn(3, 7), torch.randn(1, 2, 3, 7)]
    acc = sp.GramAccumulator(7, dtype=torch.float64)
    for x in xs:
        acc.update(x)
    X = torch.cat([x.reshape(-1, 7) for x in xs]).double()
    torch.testing.assert_close(acc.G, X.T @ X)
    assert acc.tokens == 10 + 3 + 6
    assert acc.G.dtype == torch.float64


def test_gram_fp32_default_from_bf16_and_device_choice():
    acc = sp.GramAccumulator(4, device="cpu")
    acc.update(torch.randn(6, 4, dtype=torch.bfloat16))
    assert acc.G.dtype == torch.float32 and acc.G.device.type == "cpu"


def test_gram_guards():
    acc = sp.GramAccumulator(4, name="model.layers.3.mlp.down_proj")
    with pytest.raises(ValueError, match="expected d_in = 4"):
        acc.update(torch.randn(2, 5))
    x = torch.randn(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(sp.NonFiniteActivationError, match=r"model\.layers\.3\.mlp\.down_proj.*channels \[2\]"):
        acc.update(x)
    with pytest.raises(RuntimeError, match="no calibration input"):
        _ = sp.GramAccumulator(4, name="x").G
    with pytest.raises(ValueError, match="float32 or float64"):
        sp.GramAccumulator(4, dtype=torch.float16)


# ---------------------------------------------------------------- warm starts
def _layer(d_out=6, d_in=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    X = torch.randn(d_in, 50, generator=g) * torch.rand(d_in, 1, generator=g)
    return W, X @ X.T


@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria"])
@pytest.mark.parametrize("pattern", ["0.6", "2:4", "4:8", "row:0.25"])
def test_warm_start_feasible(method, pattern):
    W, G = _layer()
    mask = sp.warm_start(W, G, pattern, method)
    assert mask.dtype == torch.bool and mask.shape == W.shape
    assert parse_pattern(pattern).is_feasible(mask)


def test_warm_start_scores_match_definitions():
    W, G = _layer()
    norm = G.diagonal().sqrt()
    torch.testing.assert_close(sp.warm_start_scores(W, G, "magnitude"), W.abs())
    torch.testing.assert_close(sp.warm_start_scores(W, G, "wanda"), W.abs() * norm)
    A = W.abs()
    ria = (A / A.sum(0, keepdim=True) + A / A.sum(1, keepdim=True)) * norm.sqrt()
    torch.testing.assert_close(sp.warm_start_scores(W, G, "ria"), ria)


def test_warm_start_keeps_highest_scores():
    W, G = _layer(d_out=4, d_in=12)
    mask = sp.warm_start(W, G, "0.5", "wanda")
    score = sp.warm_start_scores(W, G, "wanda")
    for i in range(W.shape[0]):
        assert score[i][mask[i]].min() >= score[i][~mask[i]].max()


def test_warm_start_ties_deterministic_lowest_index_pruned_first():
    W = torch.ones(2, 8)
    mask = sp.warm_start(W, None, "0.5", "magnitude")
    assert mask[0].tolist() == [False] * 4 + [True] * 4
    nm = sp.warm_start(W, None, "2:4", "magnitude")
    assert nm[0].tolist() == [False, False, True, True] * 2
    assert torch.equal(mask, sp.warm_start(W, None, "0.5", "magnitude"))


def test_warm_start_errors():
    W, G = _layer()
    with pytest.raises(ValueError, match="unknown warm start"):
        sp.warm_start(W, G, "0.5", "random")
    with pytest.raises(ValueError, match=r"Gram matrix G \(d_in × d_in = 16×16\) is required"):
        sp.warm_start(W, None, "0.5", "wanda")
    with pytest.raises(ValueError, match="G is 15×15 but W has d_in = 16"):
        sp.warm_start(W, G[:15, :15], "0.5", "wanda")


def _fp32_gemm_gram(x: torch.Tensor) -> torch.Tensor:
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return x.float().T @ x.float()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("global_tf32", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gram_on_cuda_is_a_float32_gemm_by_default(dtype, global_tf32):
    """By default activations are upcast and multiplied as a float32 GEMM (no TF32 tensor cores), also when the
    user enabled TF32 globally; the global flag is left as it was."""
    x = (torch.randn(4096, 512, device="cuda") * 3).to(dtype)
    acc = sp.GramAccumulator(512)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = global_tf32
    try:
        acc.update(x)
        assert torch.backends.cuda.matmul.allow_tf32 == global_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    assert torch.equal(acc.G, _fp32_gemm_gram(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gram_tf32_option_is_close_and_restores_the_global_flag(dtype):
    """``tf32=True``: TF32 tensor cores (coarser accumulation, measured ~1e-5 relative), flag left as it was."""
    x = (torch.randn(4096, 512, device="cuda") * 3).to(dtype)
    acc = sp.GramAccumulator(512, tf32=True)
    before = torch.backends.cuda.matmul.allow_tf32
    acc.update(x)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    ref = x.double().T @ x.double()
    err = float((acc.G.double() - ref).abs().max() / ref.abs().max())
    assert err < 1e-4


def test_gram_tf32_option_changes_nothing_on_cpu():
    x = torch.randn(300, 24).to(torch.bfloat16)
    exact, fast = sp.GramAccumulator(24), sp.GramAccumulator(24, tf32=True)
    exact.update(x)
    fast.update(x)
    assert torch.equal(exact.G, fast.G)
    assert torch.equal(exact.G, x.float().T @ x.float())
