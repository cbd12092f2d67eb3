"""Attention on the CPU in bf16, computed one cache-sized block of scores at a time.

PyTorch's own CPU kernel for ``scaled_dot_product_attention`` (flash attention) is slow in bf16 for
the head size all SD2 models use (64): on the 2-core benchmark machine it reaches about 150 GFLOP/s
where a bf16 matmul reaches 420, and attention became the largest single cost of a 512² UNet step
(36% of it, row 1 of ``python -m core.devtools.bench``).  The same maths as two matmuls around a
softmax, per head and per block of query rows whose scores fit in the cache (``BLOCK_SCORES``), runs
1.4-2× faster there (``scripts/bench_attention.py``; docs/benchmarks.md, *Attention kernels*).

``BlockedAttnProcessor`` is diffusers' ``AttnProcessor2_0`` with that kernel in place of
``scaled_dot_product_attention`` for bf16 on the CPU; any other call (another dtype or device, an
attention mask) goes to ``scaled_dot_product_attention`` as before.  The kernel is a torch custom
operator, so a compiled UNet (core/models/unet_compile.py) calls it as one opaque step instead of
tracing its loops, and inductor cannot rewrite it back into the slow kernel.

This module imports torch: import it where the models are loaded, not at the engine's start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Scores computed at once, per block: 2M bf16 values (4 MiB) stay in this CPU's 2 MiB L2 plus its
# shared L3 while the softmax and the second matmul read them back.  Measured per head at 512²
# (4096 tokens): blocks of 512 rows 186-204 ms against 311-347 ms for torch's kernel; 256 rows
# 198-227 ms; 128 rows 187-269 ms.  At 768² (9216 tokens, 227 rows) 1.06-1.22 s against 1.47-1.72 s.
BLOCK_SCORES = 1 << 21
MIN_ROWS = 64   # fewer query rows per matmul leave it too thin to reach the matmul rate


def blocks(heads: int, rows: int, keys: int) -> tuple[int, int]:
    """How many heads and query rows one block takes: whole heads together while they fit in
    ``BLOCK_SCORES`` (cross-attention's 77 keys, the small levels), else one head and as many rows as
    fit (at least ``MIN_ROWS``)."""
    per_block = max(MIN_ROWS, BLOCK_SCORES // max(keys, 1))
    if per_block < rows:
        return 1, per_block
    return max(1, min(heads, BLOCK_SCORES // max(rows * keys, 1))), rows


def blocked_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√d)·v for (batch, heads, tokens, d) tensors, as ``scaled_dot_product_attention``
    without a mask computes it, block by block (``blocks``).  Returns a contiguous tensor."""
    b, h, rows, d = query.shape
    keys = key.shape[2]
    n = b * h
    q = (query * d**-0.5).reshape(n, rows, d)     # the scale on q: rows×d products instead of rows×keys
    kt = key.reshape(n, keys, d).transpose(1, 2)
    v = value.reshape(n, keys, value.shape[-1])
    out = q.new_empty(n, rows, v.shape[-1])
    step_heads, step_rows = blocks(n, rows, keys)
    # one buffer for every block's scores, turned into probabilities in place: a fresh 4 MiB tensor per
    # block and a second one for the softmax measured 5-15% slower
    buffer = q.new_empty(step_heads, min(step_rows, rows), keys)
    for i in range(0, n, step_heads):
        kt_i, v_i = kt[i:i + step_heads], v[i:i + step_heads]
        for r in range(0, rows, step_rows):
            q_block = q[i:i + step_heads, r:r + step_rows]
            scores = buffer[:q_block.shape[0], :q_block.shape[1]]
            torch.bmm(q_block, kt_i, out=scores)
            torch.softmax(scores, -1, out=scores)
            torch.bmm(scores, v_i, out=out[i:i + step_heads, r:r + step_rows])
    return out.view(b, h, rows, v.shape[-1])


@torch.library.custom_op("diffusion_dock::blocked_attention", mutates_args=())
def blocked_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return blocked_attention(query, key, value)


@blocked_attention_op.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return query.new_empty(*query.shape[:3], value.shape[-1])


def uses_blocks(query: torch.Tensor, attention_mask) -> bool:
    """Whether a call goes to the blocked kernel: bf16 on the CPU, no mask."""
    return attention_mask is None and query.device.type == "cpu" and query.dtype == torch.bfloat16


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask=None) -> torch.Tensor:
    if uses_blocks(query, attention_mask):
        return blocked_attention_op(query, key, value)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                          is_causal=False)


class BlockedAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` (same steps, same arguments) with ``attend`` computing the
    attention itself."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args,
                 **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, sequence_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                             for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = attend(query, key, value, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def use_blocked_attention(*models) -> int:
    """Give every attention layer of ``models`` (UNets, VAEs, ControlNets; None skipped) the blocked
    processor; returns how many layers it reached."""
    from diffusers.models.attention_processor import Attention

    count = 0
    for model in filter(None, models):
        for module in model.modules():
            if isinstance(module, Attention):
                module.set_processor(BlockedAttnProcessor())
                count += 1
    return count
