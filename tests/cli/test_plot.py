"""The reduction plot's grouping of sites by block and projection."""
from __future__ import annotations

import pytest


def test_reduction_by_block_groups_sites_by_block_and_projection():
    from swappass.cli.plot import reduction_by_block
    from swappass.graph.report import SiteReport, SparsifyReport

    def row(name, warm, final):
        return SiteReport(name=name, param=name + ".weight", module_type="Linear", shape=(4, 4), status="pruned",
                          loss_warm=warm, loss_final=final)

    report = SparsifyReport([row("model.layers.0.self_attn.q_proj", 4, 3), row("model.layers.1.self_attn.q_proj", 2, 1),
                             row("model.layers.1.mlp.down_proj", 1, 1), row("proj", 5, 4), row("2", 10, 5)])
    assert reduction_by_block(report) == {
        "self_attn.q_proj": {0: 0.25, 1: 0.5}, "mlp.down_proj": {1: 0.0}, "proj": {None: pytest.approx(0.2)},
        "2": {2: 0.5},
    }
