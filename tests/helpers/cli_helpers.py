"""A tiny causal LM with a real (byte-level BPE) tokenizer, saved like a Hugging Face model; a text corpus.

Everything is built offline in milliseconds: the tokenizer is trained on :func:`corpus`, the model is a randomly
initialised 2-block LLaMA whose vocabulary matches it.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
import transformers

transformers.logging.set_verbosity_error()

WORDS = (
    "the a of to and in is was for on that with as by at from his her it an were are which this be or has had "
    "not but first one their its new after who they have two been year city river tower built song album game "
    "north south station church team season war king army school music film people time state park"
).split()


def corpus(n_words: int = 6000, seed: int = 0) -> str:
    """Sentence-like text of ``n_words`` words (newline every ~12 words)."""
    rng = random.Random(seed)
    lines, line = [], []
    for i in range(n_words):
        line.append(rng.choice(WORDS))
        if len(line) >= rng.randint(8, 16):
            lines.append(" ".join(line).capitalize() + " .")
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def tokenizer_for(text: str, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def save_tiny_llama(directory: Path, text: str | None = None, seed: int = 0) -> Path:
    """A 2-block LLaMA (hidden 32, FFN 64, 4 heads / 2 KV heads) and its tokenizer in ``directory``."""
    tokenizer = tokenizer_for(text if text is not None else corpus())
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return Path(directory)


# small options for a `swappass prune` run on the tiny model (seconds on a CPU)
SMALL = ["--nsamples", "4", "--seqlen", "32", "--iters", "4", "--no-progress"]


def save_tiny_run_inputs(root: Path) -> tuple[Path, Path]:
    """A tiny saved LLaMA and a calibration text file under ``root``: (model directory, text file)."""
    text = root / "corpus.txt"
    text.write_text(corpus())
    return save_tiny_llama(root / "model"), text
