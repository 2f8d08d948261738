"""The streaming Gram matrix: values, dtypes and devices, guards, and TF32 only when asked."""
import pytest
import torch

import swappass as sp


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


def test_gram_degeneracy_names_zero_and_collinear_inputs_only():
    from swappass.core.gram import gram_degeneracy

    torch.manual_seed(0)
    assert gram_degeneracy(torch.zeros(8, 8)).startswith("all calibration inputs are zero")
    direction = torch.randn(1, 8)
    for scale in (1.0, 1e12):  # squares beyond float32 too
        x = direction.repeat(50, 1) * torch.rand(50, 1) * scale
        assert gram_degeneracy(x.T @ x).startswith("the calibration inputs are collinear")
    x = torch.randn(50, 8)
    assert gram_degeneracy(x.T @ x) is None
    x[:, 0] *= 30  # one dominant channel is not degenerate
    assert gram_degeneracy(x.T @ x) is None
