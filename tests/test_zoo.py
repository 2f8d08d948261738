"""The conformance zoo (tools/zoo.py): every architecture family through capture, site count, sparsify at 0.6 and
2:4 and ONNX export. CI runs the families marked fast; ``pytest --zoo`` runs all of them (docs/ARCHITECTURES.md
is generated from the same run by ``python tools/zoo.py --write-docs``)."""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _zoo():
    spec = importlib.util.spec_from_file_location("swappass_zoo", REPO / "tools" / "zoo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["swappass_zoo"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


ZOO = _zoo()
PARAMS = [pytest.param(name, marks=() if fam.ci else pytest.mark.zoo, id=name)
          for name, fam in ZOO.FAMILIES.items()]


@pytest.mark.parametrize("name", PARAMS)
def test_family_prunes_and_exports(name, request):
    family = ZOO.FAMILIES[name]
    result = ZOO.run_family(family, onnx=family.ci == "all" or request.config.getoption("--zoo"))
    failed = {stage: r.detail for stage, r in result.stages.items() if r.ok is False}
    assert not failed, failed


def test_at_least_28_families_and_the_documented_ones():
    names = set(ZOO.FAMILIES)
    assert len(names) >= 28
    for needed in ("Llama", "Mistral", "Qwen2", "Qwen3", "Gemma", "Gemma2", "Gemma3 (text)", "Phi3", "OPT",
                   "GPT-2", "GPT-NeoX", "GPT-J", "Falcon", "StableLM", "OLMo2", "Cohere", "BERT", "RoBERTa",
                   "DistilBERT", "DeBERTa-v2", "T5", "BART", "ViT", "Whisper", "Mixtral", "OLMoE"):
        assert needed in names
    assert {"Qwen2-MoE", "Qwen3-MoE"} & names and any(ZOO.FAMILIES[n].kind == "vlm" for n in names)
    doc = (REPO / "docs" / "ARCHITECTURES.md").read_text()
    assert all(f"| {n} |" in doc for n in names), "docs/ARCHITECTURES.md is stale: python tools/zoo.py --write-docs"


def test_independent_count_sees_a_linear_the_graph_does_not_use():
    import torch

    family = ZOO.FAMILIES["Llama"]
    model = family.build()
    model.model.extra = torch.nn.Linear(32, 32)  # in the module tree, never called
    captured = ZOO.sp.capture(model, family.inputs(model))
    with pytest.raises(ZOO.StageFailure, match="model.extra.weight"):
        ZOO.check_sites(family, model, captured)
