"""Tiny randomly initialised Hugging Face models (built from configs, no downloads) for the graph-pass tests."""
from __future__ import annotations

import torch
import transformers

transformers.logging.set_verbosity_error()

VOCAB = 96
HIDDEN = 32
FFN = 64
LAYERS = 2
SEQ = 12


def build(arch: str, seed: int = 0) -> torch.nn.Module:
    """``arch`` in :data:`ARCHS`; eval mode, float32, 2 layers, hidden 32, FFN 64, 4 heads."""
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=4, max_position_embeddings=64)
    decoder = dict(hidden_size=HIDDEN, intermediate_size=FFN, num_key_value_heads=2, **common)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**decoder))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**decoder))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=64,
                                           n_inner=FFN, bos_token_id=0, eos_token_id=0))
    elif arch == "opt":
        model = OPTForCausalLM(OPTConfig(hidden_size=HIDDEN, ffn_dim=FFN, word_embed_proj_dim=HIDDEN,
                                         pad_token_id=1, bos_token_id=0, eos_token_id=2, **common))
    elif arch == "bert":
        model = BertModel(BertConfig(hidden_size=HIDDEN, intermediate_size=FFN, pad_token_id=0, **common))
    else:
        raise ValueError(arch)
    return model.eval()


ARCHS = ("llama", "qwen2", "gpt2", "opt", "bert")


def calib(n: int = 3, seq: int = SEQ, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (1, seq), generator=g) for _ in range(n)]


def outputs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def build_moe(arch: str = "mixtral", experts: int = 4, top_k: int = 2, implementation: str | None = None,
              seed: int = 0) -> torch.nn.Module:
    """A tiny mixture-of-experts LM (``mixtral`` or ``qwen2_moe``: shared expert with a sigmoid gate), 2 layers,
    hidden 32, expert FFN 64, fused 3-D expert weights; ``implementation``: transformers' experts_implementation."""
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  num_experts_per_tok=top_k)
    if arch == "mixtral":
        model = MixtralForCausalLM(MixtralConfig(num_local_experts=experts, **common))
    elif arch == "qwen2_moe":
        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(num_experts=experts, moe_intermediate_size=FFN,
                                                   shared_expert_intermediate_size=FFN, **common))
    else:
        raise ValueError(arch)
    if implementation is not None:
        model.set_experts_implementation(implementation)
    return model.eval()
