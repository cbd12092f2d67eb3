"""Blocked attention (core/models/blocked_attention.py): the same maths as torch's
``scaled_dot_product_attention`` block by block, the same layer outputs as diffusers' ``AttnProcessor2_0``
for every kind of SD2 attention layer, still one opaque step in a compiled UNet, and put on the loaded
models where the device policy says so."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.models import blocked_attention as ba

# bf16 keeps 8 bits of mantissa: results of order 1 round to steps of 1/128
BF16_TOL = {"rtol": 2e-2, "atol": 2e-2}


def qkv(batch, heads, rows, keys, d, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, rows, d, generator=g)
    k = torch.randn(batch, heads, keys, d, generator=g)
    v = torch.randn(batch, heads, keys, dv or d, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("heads,rows,keys,expected", [
    (10, 4096, 4096, (1, 512)),      # 512² self-attention: one head, 512 rows (2M scores)
    (10, 9216, 9216, (1, 227)),      # 768²
    (10, 4096, 77, (6, 4096)),       # cross-attention: whole heads, as many as fit
    (40, 256, 256, (32, 256)),
    (2, 10, 10, (2, 10)),            # everything at once
    (3, 100, 10**7, (1, 64)),        # never thinner than MIN_ROWS
])
def test_blocks_fit_the_score_budget(heads, rows, keys, expected):
    assert ba.blocks(heads, rows, keys) == expected


@pytest.mark.parametrize("budget", [ba.BLOCK_SCORES, 300, 1])
@pytest.mark.parametrize("shape", [(2, 3, 37, 37, 8, 8), (1, 2, 50, 77, 16, 16), (2, 1, 65, 20, 8, 12)])
def test_the_same_numbers_as_torch_whatever_the_blocks(monkeypatch, budget, shape):
    """Blocks of whole heads, of rows with a short last block, of single rows: fp32 matches torch's
    kernel to rounding, for self- and cross-attention and a value size other than the key's."""
    monkeypatch.setattr(ba, "BLOCK_SCORES", budget)
    monkeypatch.setattr(ba, "MIN_ROWS", 1)
    b, h, rows, keys, d, dv = shape
    q, k, v = qkv(b, h, rows, keys, d, dv)
    got = ba.blocked_attention(q, k, v)
    assert got.shape == (b, h, rows, dv) and got.is_contiguous()
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_bf16_within_its_rounding_of_the_exact_result():
    q, k, v = qkv(2, 5, 300, 300, 64, dtype=torch.bfloat16)
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(ba.blocked_attention(q, k, v).float(), exact, **BF16_TOL)


def test_transposed_views_as_the_processor_passes_them():
    """The processor hands over (batch, tokens, heads, d) views transposed to (batch, heads, tokens, d)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, n, 4, 8, generator=g).transpose(1, 2) for n in (40, 33, 33))
    torch.testing.assert_close(ba.blocked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               rtol=1e-5, atol=1e-5)


def attention_layers():
    """One diffusers ``Attention`` of each kind SD2 models hold: a UNet's self-attention, its
    cross-attention, and the VAE's single-head layer on 4-D feature maps with its own group norm."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    return {
        "self": (Attention(32, heads=4, dim_head=8), (2, 64, 32), None),
        "cross": (Attention(32, cross_attention_dim=24, heads=4, dim_head=8), (2, 64, 32), (2, 77, 24)),
        "vae": (Attention(32, heads=1, dim_head=32, norm_num_groups=8, residual_connection=True,
                          rescale_output_factor=1.0, eps=1e-6, bias=True, upcast_softmax=True,
                          _from_deprecated_attn_block=True), (1, 32, 8, 8), None),
    }


def run_layer(layer, processor, x, ctx, mask=None):
    layer.set_processor(processor)
    with torch.inference_mode():
        return layer(x, encoder_hidden_states=ctx, attention_mask=mask)


@pytest.mark.parametrize("kind", ["self", "cross", "vae"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_layer_gives_what_diffusers_own_processor_gives(monkeypatch, kind, dtype):
    """bf16 goes through the blocked kernel (counted) and matches within bf16 rounding; fp32 goes to
    torch's kernel, exactly as diffusers' processor."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    layer, x_shape, ctx_shape = attention_layers()[kind]
    layer.to(dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*x_shape, generator=g).to(dtype)
    ctx = None if ctx_shape is None else torch.randn(*ctx_shape, generator=g).to(dtype)
    calls = []
    real = ba.blocked_attention
    monkeypatch.setattr(ba, "blocked_attention", lambda *a: calls.append(a[0].shape) or real(*a))
    expected = run_layer(layer, AttnProcessor2_0(), x, ctx)
    got = run_layer(layer, ba.BlockedAttnProcessor(), x, ctx)
    assert got.shape == expected.shape == x.shape
    if dtype == torch.bfloat16:
        assert len(calls) == 1
        torch.testing.assert_close(got.float(), expected.float(), **BF16_TOL)
    else:
        assert calls == [] and torch.equal(got, expected)


def test_a_masked_call_goes_to_torchs_kernel(monkeypatch):
    from diffusers.models.attention_processor import AttnProcessor2_0

    layer, _, _ = attention_layers()["cross"]
    layer.to(torch.bfloat16)
    x = torch.randn(2, 64, 32).to(torch.bfloat16)
    ctx = torch.randn(2, 77, 24).to(torch.bfloat16)
    mask = torch.ones(2, 77)
    mask[:, 40:] = 0
    monkeypatch.setattr(ba, "blocked_attention", lambda *a: pytest.fail("a masked call was blocked"))
    expected = run_layer(layer, AttnProcessor2_0(), x, ctx, (1 - mask) * -10000.0)
    got = run_layer(layer, ba.BlockedAttnProcessor(), x, ctx, (1 - mask) * -10000.0)
    assert torch.equal(got, expected)


def step(unet):
    """One guided step of ``unet`` (bf16) on ``test_unet_compile``'s inputs."""
    from .test_unet_compile import call, inputs

    x, t, ctx = inputs()
    return call(unet, x.to(torch.bfloat16), t, ctx.to(torch.bfloat16))


def test_a_compiled_unet_calls_the_blocked_kernel_as_one_step(monkeypatch):
    """Compiled by the engine's dispatcher (real inductor): the compiled graph still calls the kernel once
    per attention layer (a custom operator: not traced into, not rewritten into torch's kernel), and
    gives the eager UNet's numbers."""
    from diffusers.models.attention_processor import Attention

    from core.models import unet_compile

    from .test_unet_compile import small_unet

    unet = small_unet().to(torch.bfloat16)
    layers = sum(isinstance(m, Attention) for m in unet.modules())
    assert ba.use_blocked_attention(unet) == layers == 8    # attn1 and attn2 of 4 transformer blocks
    expected = step(unet)
    calls = []
    real = ba.blocked_attention
    monkeypatch.setattr(ba, "blocked_attention", lambda *a: calls.append(a[0].shape) or real(*a))
    d = unet_compile.install(unet)
    try:
        step(unet)
        assert d.wait(600) and d.ready, d.failed
        calls.clear()
        again = step(unet)
        assert d.calls["compiled"] == 1
    finally:
        unet_compile.uninstall(unet)
    assert len(calls) == layers
    torch.testing.assert_close(again.float(), expected.float(), **BF16_TOL)


def test_loaded_models_follow_the_policy(models, policy):
    """The engine's loader gives the UNet's and the VAE's attention layers the blocked processor exactly
    when the policy says so (bf16 on the CPU); the tiny pipeline then runs."""
    from diffusers.models.attention_processor import Attention

    pipe = models.get("inpaint").pipe
    layers = [m for net in (pipe.unet, pipe.vae) for m in net.modules() if isinstance(m, Attention)]
    assert layers
    assert all(isinstance(m.processor, ba.BlockedAttnProcessor) == policy.blocked_attention for m in layers)


def test_a_loaded_controlnet_follows_the_policy(tiny_root, policy):
    from diffusers.models.attention_processor import Attention

    from core.devtools.tiny_models import build_controlnet
    from core.models import controlnets
    from core.models.device import choose_policy, probe
    from core.models.resolver import ResolvedModel

    folder = build_controlnet(tiny_root / "controlnet-canny")
    resolved = ResolvedModel("controlnet-canny", None, folder, "explicit", "ControlNetModel", "epsilon")
    for chosen in (choose_policy(probe(), "cpu", "bfloat16"), choose_policy(probe(), "cpu", "float32")):
        net = controlnets.load(resolved, chosen)
        layers = [m for m in net.modules() if isinstance(m, Attention)]
        assert layers and all(isinstance(m.processor, ba.BlockedAttnProcessor) == chosen.blocked_attention
                              for m in layers)


def test_the_benchmarks_profile_counts_the_blocked_kernels_work_as_attention():
    """Row 1's breakdown: the matmuls and softmax run inside the blocked kernel are attention, a linear
    layer's matmul outside it is not."""
    from torch.profiler import ProfilerActivity, profile

    from core.devtools.bench.unet import seconds_by_kind

    q, k, v = qkv(2, 4, 256, 256, 64, dtype=torch.bfloat16)
    w = torch.randn(512, 512).to(torch.bfloat16)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        ba.blocked_attention_op(q, k, v)
        torch.nn.functional.linear(torch.randn(256, 512).to(torch.bfloat16), w)
    spent = seconds_by_kind(prof)
    inside = sum(e.self_cpu_time_total for e in prof.events() if e.name in ("aten::bmm", "aten::_softmax")) / 1e6
    assert inside > 0 and spent["attention"] >= inside
    assert spent["linear and matmul"] > 0
