"""The families of the conformance zoo (tools/zoo.py): a tiny random model of each, built from its own config.

Every family is 2 layers with small widths (hidden 32, FFN 64, 4 heads) and keeps what makes it that family:
grouped-query attention, tied embeddings, biases, sliding windows, fused projections, MoE routing, an
encoder-decoder or a vision tower. :data:`FAMILIES` maps a family name to a :class:`Family`; ``build()``
returns the model (eval mode, float32, seeded) and ``inputs()`` one calibration item (a dict of tensors).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import transformers

transformers.logging.set_verbosity_error()

VOCAB = 96
HIDDEN = 32
FFN = 64
LAYERS = 2
HEADS = 4
SEQ = 12


@dataclass(frozen=True)
class Family:
    """One architecture family of the zoo.

    ``make``: builds the model (seeded by the caller). ``ci``: part of the fast CI run: ``"all"`` (every stage),
    ``"no-onnx"`` (all but the ONNX export, which ``pytest --zoo`` adds) or ``None`` (``pytest --zoo`` only). ``kind``: ``"decoder"`` (token ids), ``"encoder"``,
    ``"encoder-decoder"`` (``input_ids`` + ``decoder_input_ids``), ``"speech"`` (``input_features`` +
    ``decoder_input_ids``), ``"vision"`` (``pixel_values``) or ``"vlm"`` (``input_ids`` with image tokens +
    ``pixel_values``). ``features``: what the tiny config keeps of the family.
    ``targets``: site selectors for the run (None: the defaults). ``unused``: parameters of the module tree that
    the forward pass does not use (excluded from the independent site count), with the reason.
    """

    name: str
    model_class: str
    make: Callable[[], torch.nn.Module]
    kind: str
    features: str
    ci: str | None = None
    targets: tuple[str, ...] | None = None
    unused: dict[str, str] = field(default_factory=dict)
    inputs_fn: Callable[..., dict[str, torch.Tensor]] | None = None

    def build(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return self.make().eval()

    def inputs(self, model: torch.nn.Module, seed: int = 0, batch: int = 1, seq: int = SEQ
               ) -> dict[str, torch.Tensor]:
        """One calibration item for ``model``: a dict of tensors, batch ``batch``, ``seq`` tokens (text inputs; a
        decoder input is 4 tokens shorter; images and audio have the model's fixed size)."""
        if self.inputs_fn is not None:
            return self.inputs_fn(model, seed, batch, seq)
        return _token_inputs(model, seed, batch, self.kind, seq)


def _ids(seed: int, batch: int, seq: int = SEQ, low: int = 3, high: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, seq), generator=g)


def _token_inputs(model, seed: int, batch: int, kind: str, seq: int) -> dict[str, torch.Tensor]:
    ids = _ids(seed, batch, seq)
    item = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "encoder-decoder":
        item["decoder_input_ids"] = _ids(seed + 1000, batch, seq - 4)
    return item


def _decoder(config_cls: str, model_cls: str, **extra):
    def make():
        common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64)
        common.update(extra)
        config = getattr(transformers, config_cls)(**common)
        return getattr(transformers, model_cls)(config)
    return make


def _moe(config_cls: str, model_cls: str, **extra):
    def make():
        config = getattr(transformers, config_cls)(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64, **extra)
        return getattr(transformers, model_cls)(config)
    return make


def _plain(config_cls: str, model_cls: str, **kwargs):
    def make():
        return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs))
    return make


def _pixel_inputs(model, seed: int, batch: int, seq: int = SEQ) -> dict[str, torch.Tensor]:
    config = model.config
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    return {"pixel_values": torch.randn(batch, config.num_channels, size, size, generator=g)}


def _speech_inputs(model, seed: int, batch: int, seq: int = SEQ) -> dict[str, torch.Tensor]:
    config = model.config
    g = torch.Generator().manual_seed(seed)
    frames = 2 * config.max_source_positions
    features = torch.randn(batch, config.num_mel_bins, frames, generator=g)
    return {"input_features": features, "decoder_input_ids": _ids(seed + 1000, batch, seq - 4)}


def _gemma3_vlm():
    text = dict(vocab_size=VOCAB + 8, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                num_attention_heads=HEADS, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                sliding_window=8)
    vision = dict(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  image_size=16, patch_size=4)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                       image_token_index=VOCAB + 1, boi_token_index=VOCAB + 2,
                                       eoi_token_index=VOCAB + 3)
    return transformers.Gemma3ForConditionalGeneration(config)


def _gemma3_vlm_inputs(model, seed: int, batch: int, seq: int = SEQ) -> dict[str, torch.Tensor]:
    config = model.config
    n_img = config.mm_tokens_per_image
    ids = _ids(seed, batch, seq)
    ids[:, 2 : 2 + n_img] = config.image_token_index
    g = torch.Generator().manual_seed(seed)
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=g)
    token_type = (ids == config.image_token_index).long()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels,
            "token_type_ids": token_type}


_FAMILIES = [
    Family("Llama", "LlamaForCausalLM", _decoder("LlamaConfig", "LlamaForCausalLM"), "decoder",
           "GQA (4 heads, 2 KV heads), SwiGLU"),
    Family("Mistral", "MistralForCausalLM", _decoder("MistralConfig", "MistralForCausalLM", sliding_window=8),
           "decoder", "GQA, sliding window 8 (shorter than the sequence)"),
    Family("Qwen2", "Qwen2ForCausalLM", _decoder("Qwen2Config", "Qwen2ForCausalLM"), "decoder",
           "GQA, q/k/v biases"),
    Family("Qwen3", "Qwen3ForCausalLM", _decoder("Qwen3Config", "Qwen3ForCausalLM", head_dim=8), "decoder",
           "GQA, q/k norms"),
    Family("Gemma", "GemmaForCausalLM", _decoder("GemmaConfig", "GemmaForCausalLM", head_dim=8), "decoder",
           "GQA, tied embeddings, GeGLU"),
    Family("Gemma2", "Gemma2ForCausalLM", _decoder("Gemma2Config", "Gemma2ForCausalLM", head_dim=8,
                                                   sliding_window=8), "decoder",
           "GQA, tied embeddings, alternating sliding window, logit soft-capping"),
    Family("Gemma3 (text)", "Gemma3ForCausalLM", _decoder("Gemma3TextConfig", "Gemma3ForCausalLM", head_dim=8,
                                                         sliding_window=8), "decoder",
           "GQA, tied embeddings, sliding-window and global layers, q/k norms"),
    Family("Phi3", "Phi3ForCausalLM", _decoder("Phi3Config", "Phi3ForCausalLM", pad_token_id=0), "decoder",
           "fused qkv_proj and gate_up_proj, GQA"),
    Family("OPT", "OPTForCausalLM", _plain("OPTConfig", "OPTForCausalLM", vocab_size=VOCAB, hidden_size=HIDDEN,
                                           ffn_dim=FFN, word_embed_proj_dim=HIDDEN, num_hidden_layers=LAYERS,
                                           num_attention_heads=HEADS, max_position_embeddings=64, pad_token_id=1,
                                           bos_token_id=0, eos_token_id=2), "decoder",
           "biases, learned positions, tied embeddings"),
    Family("GPT-2", "GPT2LMHeadModel", _plain("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_embd=HIDDEN,
                                              n_layer=LAYERS, n_head=HEADS, n_positions=64, n_inner=FFN,
                                              bos_token_id=0, eos_token_id=0), "decoder",
           "Conv1D (weights stored in × out), fused c_attn, tied embeddings"),
    Family("GPT-NeoX", "GPTNeoXForCausalLM", _plain("GPTNeoXConfig", "GPTNeoXForCausalLM", vocab_size=VOCAB,
                                                    hidden_size=HIDDEN, intermediate_size=FFN,
                                                    num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                                    max_position_embeddings=64), "decoder",
           "fused query_key_value, parallel residual, partial rotary"),
    Family("GPT-J", "GPTJForCausalLM", _plain("GPTJConfig", "GPTJForCausalLM", vocab_size=VOCAB, n_embd=HIDDEN,
                                              n_layer=LAYERS, n_head=HEADS, n_positions=64, n_inner=FFN,
                                              rotary_dim=4, bos_token_id=0, eos_token_id=0), "decoder",
           "parallel attention and MLP, partial rotary, lm_head bias"),
    Family("Falcon", "FalconForCausalLM", _plain("FalconConfig", "FalconForCausalLM", vocab_size=VOCAB,
                                                 hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                 num_attention_heads=HEADS, new_decoder_architecture=True,
                                                 num_kv_heads=2, max_position_embeddings=64), "decoder",
           "new decoder architecture: fused query_key_value with 2 KV groups, parallel attention"),
    Family("StableLM", "StableLmForCausalLM", _decoder("StableLmConfig", "StableLmForCausalLM",
                                                       use_qkv_bias=True, partial_rotary_factor=0.5), "decoder",
           "GQA, q/k/v biases, partial rotary, LayerNorm"),
    Family("OLMo2", "Olmo2ForCausalLM", _decoder("Olmo2Config", "Olmo2ForCausalLM", pad_token_id=1), "decoder",
           "GQA, q/k norms, post-norms"),
    Family("Cohere", "CohereForCausalLM", _decoder("CohereConfig", "CohereForCausalLM", pad_token_id=0,
                                                   bos_token_id=1, eos_token_id=2), "decoder",
           "GQA, parallel attention and MLP, tied embeddings, logit scale"),
    Family("BERT", "BertModel", _plain("BertConfig", "BertModel", vocab_size=VOCAB, hidden_size=HIDDEN,
                                       intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                       max_position_embeddings=64, pad_token_id=0), "encoder",
           "encoder, pooler, biases"),
    Family("RoBERTa", "RobertaForMaskedLM", _plain("RobertaConfig", "RobertaForMaskedLM", vocab_size=VOCAB,
                                                   hidden_size=HIDDEN, intermediate_size=FFN,
                                                   num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                                   max_position_embeddings=64, pad_token_id=1), "encoder",
           "encoder, masked-LM head with tied decoder"),
    Family("DistilBERT", "DistilBertForMaskedLM", _plain("DistilBertConfig", "DistilBertForMaskedLM",
                                                         vocab_size=VOCAB, dim=HIDDEN, hidden_dim=FFN,
                                                         n_layers=LAYERS, n_heads=HEADS,
                                                         max_position_embeddings=64, pad_token_id=0), "encoder",
           "encoder, masked-LM head with tied projector"),
    Family("DeBERTa-v2", "DebertaV2Model", _plain("DebertaV2Config", "DebertaV2Model", vocab_size=VOCAB,
                                                  hidden_size=HIDDEN, intermediate_size=FFN,
                                                  num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                                  max_position_embeddings=64, relative_attention=True,
                                                  position_buckets=8, pos_att_type=["p2c", "c2p"],
                                                  pad_token_id=0), "encoder",
           "disentangled relative attention (c2p, p2c), position buckets"),
    Family("T5", "T5ForConditionalGeneration", _plain("T5Config", "T5ForConditionalGeneration", vocab_size=VOCAB,
                                                       d_model=HIDDEN, d_ff=FFN, d_kv=8, num_layers=LAYERS,
                                                       num_heads=HEADS, decoder_start_token_id=0, pad_token_id=0),
           "encoder-decoder", "encoder-decoder, relative position buckets, cross-attention, tied embeddings",
           ci="no-onnx"),
    Family("BART", "BartForConditionalGeneration", _plain("BartConfig", "BartForConditionalGeneration",
                                                          vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=LAYERS,
                                                          decoder_layers=LAYERS, encoder_attention_heads=HEADS,
                                                          decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                                                          decoder_ffn_dim=FFN, max_position_embeddings=64,
                                                          pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                                          decoder_start_token_id=2), "encoder-decoder",
           "encoder-decoder, learned positions, cross-attention, biases"),
    Family("ViT", "ViTModel", _plain("ViTConfig", "ViTModel", hidden_size=HIDDEN, intermediate_size=FFN,
                                     num_hidden_layers=LAYERS, num_attention_heads=HEADS, image_size=16,
                                     patch_size=4), "vision",
           "patch embedding (Conv2d, not a Linear site), encoder, pooler", inputs_fn=_pixel_inputs),
    Family("Whisper", "WhisperForConditionalGeneration",
           _plain("WhisperConfig", "WhisperForConditionalGeneration", vocab_size=VOCAB, d_model=HIDDEN,
                  encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
                  decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, num_mel_bins=16,
                  max_source_positions=16, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None),
           "speech", "speech encoder (Conv1d front end) and decoder, cross-attention, tied embeddings",
           inputs_fn=_speech_inputs),
    Family("Mixtral", "MixtralForCausalLM", _moe("MixtralConfig", "MixtralForCausalLM", num_local_experts=4,
                                                 num_experts_per_tok=2, sliding_window=None), "decoder",
           "MoE: 4 experts, top-2, fused 3-D expert weights, GQA", ci="no-onnx"),
    Family("Qwen2-MoE", "Qwen2MoeForCausalLM", _moe("Qwen2MoeConfig", "Qwen2MoeForCausalLM", num_experts=4,
                                                    num_experts_per_tok=2, moe_intermediate_size=FFN,
                                                    shared_expert_intermediate_size=FFN), "decoder",
           "MoE: 4 experts, top-2, shared expert with a sigmoid gate, q/k/v biases"),
    Family("Qwen3-MoE", "Qwen3MoeForCausalLM", _moe("Qwen3MoeConfig", "Qwen3MoeForCausalLM", num_experts=4,
                                                    num_experts_per_tok=2, moe_intermediate_size=FFN,
                                                    head_dim=8), "decoder",
           "MoE: 4 experts, top-2, q/k norms"),
    Family("OLMoE", "OlmoeForCausalLM", _moe("OlmoeConfig", "OlmoeForCausalLM", num_experts=4,
                                             num_experts_per_tok=2, pad_token_id=1), "decoder",
           "MoE: 4 experts, top-2, q/k norms"),
    Family("Gemma3 (vision-language)", "Gemma3ForConditionalGeneration", _gemma3_vlm, "vlm",
           "SigLIP vision tower + projector + Gemma3 text model, image tokens in the text",
           inputs_fn=_gemma3_vlm_inputs, ci="no-onnx"),
]

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILIES}
