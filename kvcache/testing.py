"""Tiny seeded models and a reversible character tokenizer, for fast tests of KV reuse code."""

from __future__ import annotations

from typing import Any

import torch

BOS, EOS, PAD = 1, 2, 0
_OFFSET = 4


class CharTokenizer:
    """One id per character (ids 4..), ChatML-like template; decode(encode(s)) == s for ASCII/Latin-1."""

    bos_token_id = BOS
    eos_token_id = EOS
    pad_token_id = PAD
    chat_template = "chatml-like"

    def __init__(self, vocab_size: int = 300) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [min(ord(c), self.vocab_size - 1 - _OFFSET) + _OFFSET for c in text]
        return ([BOS] if add_special_tokens else []) + ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(chr(i - _OFFSET) for i in ids if i >= _OFFSET)

    def get_vocab(self) -> dict[str, int]:
        return {f"<{i}>": i for i in range(self.vocab_size)}

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False) -> Any:
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages)
        if add_generation_prompt:
            text += "<assistant>\n"
        return self.encode(text) if tokenize else text


def tiny_config(kind: str = "llama", layers: int = 3, vocab_size: int = 300, **overrides: Any):
    from transformers import LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    params = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    params.update(overrides)
    return cls(**params)


def tiny_model(kind: str = "llama", seed: int = 0, layers: int = 3, **overrides: Any):
    """A seeded random causal LM in fp32, eval mode; weights scaled up so attention is not uniform."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, layers, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)
    return model
