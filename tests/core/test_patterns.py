"""Sparsity patterns: parsing, per-row counts, shape and mask errors (row, N:M and unstructured budgets)."""
import pytest
import torch

import swappass as sp
from swappass.core.patterns import NMSparsity, RowSparsity, UnstructuredSparsity, parse_pattern


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


@pytest.mark.parametrize("spec", ["unstructured:0.6", "UNSTRUCTURED:60%", " unstructured: 0.6 "])
def test_parse_unstructured(spec):
    pat = parse_pattern(spec)
    assert pat == UnstructuredSparsity(0.6)
    assert str(pat) == "unstructured:0.6" and parse_pattern(str(pat)) == pat


@pytest.mark.parametrize("spec", ["unstructured:1.0", "unstructured:-0.1", "unstructured:", "unstructured:x"])
def test_parse_unstructured_rejects_nonsense(spec):
    with pytest.raises(ValueError):
        parse_pattern(spec)


def test_unstructured_counts_and_errors():
    pat = UnstructuredSparsity(0.6)
    assert pat.kept_total(576, 1536) == round(576 * 1536 * 0.4)
    assert sp.RowSparsity(0.6).kept_total(3, 576) == 3 * 230
    with pytest.raises(TypeError, match="no per-row count"):
        pat.kept_per_row(10)
    with pytest.raises(ValueError, match="keeps no weight"):
        UnstructuredSparsity(0.99).check_shape(2, 10, where="blk.0.q")
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[0] = True  # 5 kept, rows uneven: feasible iff the total matches
    assert UnstructuredSparsity(0.75).is_feasible(mask)
    mask[1, 0] = True
    with pytest.raises(ValueError, match="keeps 6 weights, the pattern needs exactly 5 of 4×5"):
        UnstructuredSparsity(0.75).check_mask(mask, where="blk.0.q")
