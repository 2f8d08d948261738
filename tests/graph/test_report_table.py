"""The report as terminal text: the full table, the per-site table within 80 columns, the per-projection summary."""
from __future__ import annotations

import math

import pytest

from swappass.graph.report import AUTO_SITES_MAX, SiteReport, SparsifyReport, projection_kind


def _report(blocks: int, prefix: str = "model.decoder.layers.") -> SparsifyReport:
    rows = []
    for b in range(blocks):
        for i, (kind, shape) in enumerate((("self_attn.q_proj", (576, 576)), ("mlp.down_proj", (576, 1536)))):
            rows.append(SiteReport(f"{prefix}{b}.{kind}", f"{prefix}{b}.{kind}.weight", "Linear", shape, "pruned",
                                   pattern="2:4", loss_warm=1.2345e6 * (b + 1), loss_final=(0.5 - 0.01 * i) * 1.2345e6
                                   * (b + 1), swaps=123456, seconds=0.25 + i))
    rows.append(SiteReport("lm_head", "lm_head.weight", "Linear", (49152, 576), "ignored",
                           reason="weight tied to the embedding model.embed_tokens.weight and a long note"))
    return SparsifyReport(rows, {}, 12.5)


def test_sites_table_fits_80_columns_and_keeps_every_site():
    report = _report(12)
    text = report.table("sites")
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].startswith("24 sites under model.decoder.layers, pattern 2:4")
    assert any(line.startswith("11.mlp.down_proj ") for line in lines)  # the prefix is dropped, not the block
    sites = lines[3:-2]  # after the title, header and rule; before lm_head and the totals
    assert len(sites) == 24 and all(line.split()[0][0].isdigit() for line in sites)
    assert "pattern" not in lines[1]  # one pattern for every site: in the first line, not a column
    assert lines[-1] == "24 pruned, 0 skipped, 1 ignored; mean relative error reduction 50.50%; 12.5 s"


def test_very_long_names_are_cut_from_the_left_to_fit():
    report = _report(2, prefix="encoder.a_very_long_module_path_that_would_never_fit.in_eighty_columns.blocks.")
    report.rows.insert(0, SiteReport("an.other.branch.with.a.long.name.proj", "x.weight", "Linear", (8, 8),
                                     "pruned", pattern="2:4", loss_warm=1.0, loss_final=0.5))
    lines = report.table("sites").splitlines()
    assert max(map(len, lines)) <= 80
    assert any(line.startswith("…") and "q_proj" in line for line in lines)


def test_summary_has_one_row_per_projection_kind():
    report = _report(30)
    lines = report.table("summary").splitlines()
    assert max(map(len, lines)) <= 80
    rows = {line.split()[0]: line.split() for line in lines[3:-1]}
    assert set(rows) == {"self_attn.q_proj", "mlp.down_proj", "lm_head"}
    q = rows["self_attn.q_proj"]
    assert q[1:3] == ["30", "576×576"] and q[3:6] == ["50.00%", "50.00%", "50.00%"]
    assert q[6] == str(30 * 123456) and math.isclose(float(q[7]), 30 * 0.25, abs_tol=0.05)
    assert rows["mlp.down_proj"][3] == "51.00%" and "ignored" in rows["lm_head"]


def test_auto_chooses_by_the_number_of_sites_and_full_is_str():
    small, big = _report(AUTO_SITES_MAX // 2 - 1), _report(AUTO_SITES_MAX)
    assert small.table("auto") == small.table("sites")
    assert big.table("auto") == big.table("summary")
    assert str(big) == big.table("full") and "model.decoder.layers.3.mlp.down_proj" in str(big)
    assert "pattern" in str(big).splitlines()[0]
    with pytest.raises(ValueError, match="table style"):
        big.table("wide")


@pytest.mark.parametrize("name,kind", [("model.layers.3.self_attn.q_proj", "self_attn.q_proj"),
                                       ("transformer.h.11.attn.c_attn", "attn.c_attn"),
                                       ("lm_head", "lm_head"), ("blocks.2", "blocks.2")])
def test_projection_kind(name, kind):
    assert projection_kind(name) == kind
