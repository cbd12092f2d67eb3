"""Prompt → text embeddings, through compel (weights, and prompts longer than 77 tokens).

Prompts are never silently cut: compel encodes long prompts in 77-token chunks and concatenates
them.  Unweighted prompts bypass compel's syntax parser (so "(" and "+" stay literal) but use the same
chunking.  Results are cached per text encoder, so repeating a prompt costs nothing.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

CACHE_SIZE = 32
_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


@dataclass(frozen=True)
class Embeddings:
    positive: object            # torch.Tensor (1, T, D)
    negative: object | None     # same shape, or None when guidance is off
    tokens: int                 # token count of the longer prompt (without BOS/EOS)
    warnings: tuple[str, ...] = ()


def _compel(tokenizer, text_encoder):
    from compel import Compel

    return Compel(tokenizer=tokenizer, text_encoder=text_encoder, truncate_long_prompts=False,
                  device=str(text_encoder.device), dtype_for_device_getter=lambda _d: text_encoder.dtype)


def _conditioning(compel, text: str, weighted: bool, name: str = "prompt"):
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    if weighted:
        try:
            conj = compel.parse_prompt_string(text)
        except Exception as e:  # pyparsing's ParseException: the weight syntax does not parse
            from ..contract.params import ValidationError

            at = getattr(e, "col", None)
            where = f" near character {at}" if isinstance(at, int) else ""
            raise ValidationError(name, f"{name}: the weight syntax cannot be read{where}; fix the brackets "
                                        f"or turn weights off") from None
    else:
        conj = Conjunction([FlattenedPrompt([Fragment(text, 1.0)])])
    cond, _ = compel.build_conditioning_tensor_for_conjunction(conj)
    return cond


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, truncation=False, add_special_tokens=False).input_ids)


def clear_cache() -> None:
    with _lock:
        _caches.clear()


def cache_info(text_encoder) -> int:
    with _lock:
        return len(_caches.get(text_encoder, ()))


def encode(tokenizer, text_encoder, prompt: str, negative: str, *, weighted: bool, guidance: bool
           ) -> Embeddings:
    """Embeddings for ``prompt`` and (when ``guidance``) ``negative``, padded to the same length."""
    import torch

    # What is attached to the text encoder for this job (LoRAs, embeddings: pipelines/adapters.py) too.
    key = (prompt, negative if guidance else None, bool(weighted), str(text_encoder.dtype),
           getattr(text_encoder, "_dd_adapter_state", ()))
    with _lock:
        cache = _caches.setdefault(text_encoder, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    compel = _compel(tokenizer, text_encoder)
    with torch.no_grad():
        pos = _conditioning(compel, prompt, weighted)
        neg = _conditioning(compel, negative, weighted, "negative_prompt") if guidance else None
        if neg is not None:
            pos, neg = compel.pad_conditioning_tensors_to_same_length([pos, neg])
    limit = tokenizer.model_max_length - 2
    n = max(count_tokens(tokenizer, prompt), count_tokens(tokenizer, negative) if guidance else 0)
    warnings: tuple[str, ...] = ()
    if n > limit:
        warnings = (f"prompt has {n} tokens, more than the model's {limit}: it was encoded in "
                    f"{(n + limit - 1) // limit} chunks of {limit} tokens, not cut",)
    result = Embeddings(pos, neg, n, warnings)
    with _lock:
        cache[key] = result
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
    return result
