"""The reference-image control: reference-only attention injection, with the job's own UNet and no new
weights (IP-Adapter has no SD2 release).

At each denoising step inside the control's start/end window, before the job's UNet call, the reference
image's latents, noised to the step's timestep by the job's scheduler, go through the same UNet with the
same prompt embeddings (the *reference pass*); the self-attention (``attn1``) of every transformer block
records its input tokens.  In the job's own call each ``attn1`` then attends to its own tokens
concatenated with the recorded ones, so the picture borrows the reference's low-level appearance
(colours, textures, local patterns) wherever its queries match the reference's keys.  It does not read
the reference's content as IP-Adapter's image encoder would: nothing "understands" what is pictured.

- **Strength** ``w`` (0–2) is the attention weight: each ``attn1`` output is ``plain + w·(injected −
  plain)``; 1 is reference-only as published, 2 extrapolates, 0 runs nothing (bit for bit the job
  without the reference).
- **Classifier-free guidance.**  The conditional rows get the full injection; the unconditional rows
  ``(1 − STYLE_FIDELITY)`` of it (the rule of sd-webui-controlnet's reference_only and diffusers'
  community ``stable_diffusion_reference``, at their default style fidelity 0.5): the guidance then
  pushes the picture towards the reference as well.
- **Start/end** as the ControlNets': step ``i`` of ``n`` that run is inside when ``i/n >= start`` and
  ``(i+1)/n <= end``.  Outside the window the UNet runs once, as without the reference.
- **Cost**: each step inside the window runs the UNet twice, and each ``attn1`` of the job's call attends to
  twice the tokens (plus its plain attention for the rows only partly injected: the unconditional ones).
- On the 9-channel inpainting UNet the reference pass sees the whole reference as known (mask 0, the
  masked image = the reference); on the 5-channel depth UNet (restyle) it gets the job's own depth
  channel, taken from the job's call (``restyle.py`` says why).  Combines with ControlNets: their
  residuals go to the job's call only.
- The reference's latents need not have the job's size (its tokens are concatenated to the job's):
  Expand gives each pass the reference's part nearest its window, at the pass's scale (``expand.py``).
- The reference's noise is drawn from its own generators (seed + i + ``NOISE_SEED_OFFSET``), so image i
  still depends only on seed + i and the pipeline's own noise is untouched.

Everything is set for the job only (``applied``): a wrapping processor on each ``attn1`` and a forward
pre-hook on the UNet, removed after the job however it ends (done, cancelled, failed); the compiled UNet
runs eagerly meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..contract import controls as C
from ..contract.geometry import Rect
from ..contract.jobs import JobRequest

STYLE_FIDELITY = 0.5
NOISE_SEED_OFFSET = 0x2EF0   # the reference's noise must not repeat the pipeline's own


@dataclass
class Reference:
    """A request's reference image, ready for a job: its latents at the model's size and how it acts."""

    latents: Any               # torch tensor 1×4×h×w (scaled like the UNet's latents)
    strength: float
    start: float
    end: float
    seeds: tuple[int, ...]
    steps: list[int] = field(default_factory=list)   # the steps of the last job where it was injected


def find(req: JobRequest) -> tuple[int, C.Control] | None:
    """The request's reference control and its index (validation allows at most one)."""
    return next(((i, c) for i, c in enumerate(req.controls) if c.type == C.REFERENCE), None)


def prepare(req: JobRequest, region: Rect, size: tuple[int, int], pipe, seeds) -> Reference | None:
    """The request's reference image cut to the job's ``region`` at the model's ``size`` and encoded by
    ``pipe``'s VAE (the posterior's mean); None without one, or at strength 0 (nothing to do)."""
    found = find(req)
    if found is None:
        return None
    i, c = found
    C.check_covers(i, c, region.as_tuple())     # of another size: refused, never stretched
    if c.strength == 0.0:
        return None
    return encode(c, region, size, pipe, seeds)


def encode(c: C.Control, rect: Rect, size: tuple[int, int], pipe, seeds) -> Reference:
    """The reference control ``c``'s pixels over ``rect`` (canvas coordinates, covered by ``c``) at ``size``,
    encoded by ``pipe``'s VAE.  ``size`` need not be the job's model size: the reference's tokens are
    concatenated to the job's, so their number may differ (Expand's passes)."""
    from .common import encode_image
    from .controls import control_picture

    rgb = control_picture(c, rect, size)
    return Reference(encode_image(pipe, np.ascontiguousarray(rgb)), c.strength, c.start, c.end, tuple(seeds))


def inside(step: int, total: int, start: float, end: float) -> bool:
    """Whether step ``step`` (0-based) of ``total`` that run is inside the window (diffusers' ControlNet rule)."""
    return step / total >= start and (step + 1) / total <= end


class _State:
    def __init__(self, ref: Reference, guided: bool):
        self.ref = ref
        self.guided = guided
        self.mode = ""           # "", "write" (reference pass) or "read" (the job's call, injected)
        self.bank: dict[int, object] = {}


class ReferenceAttnProcessor:
    """Wraps one ``attn1``'s processor: records its input in the reference pass, attends to it as well in
    the job's call, and is the wrapped processor itself otherwise."""

    def __init__(self, inner, state: _State, index: int):
        self.inner, self.state, self.index = inner, state, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        st = self.state
        if st.mode == "write":
            st.bank[self.index] = hidden_states
        if st.mode != "read" or self.index not in st.bank:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        import torch

        both = torch.cat([hidden_states, st.bank[self.index]], dim=1)
        injected = self.inner(attn, hidden_states, both, attention_mask, temb, *args, **kwargs)
        rows = hidden_states.shape[0]
        # the unconditional half comes first in diffusers' guided batch
        weights = [st.ref.strength * (1.0 - STYLE_FIDELITY if st.guided and r < rows // 2 else 1.0)
                   for r in range(rows)]
        need = [r for r, w in enumerate(weights) if w != 1.0] if attention_mask is None else list(range(rows))
        if not need:      # full injection everywhere: the plain attention is not needed
            return injected
        idx = torch.tensor(need, device=hidden_states.device)
        plain = self.inner(attn, hidden_states[idx], None, attention_mask, temb, *args, **kwargs)
        w = torch.tensor([weights[r] for r in need], dtype=plain.dtype, device=plain.device).view(-1, 1, 1)
        out = injected.clone()
        out[idx] = plain + w * (injected[idx] - plain)
        return out


def _reference_sample(ref: Reference, state_gens: list, scheduler, sample, t):
    """The reference pass's UNet input for the job's ``sample`` at timestep ``t``: the reference's latents
    noised to ``t`` by the job's scheduler (one draw per image from its own generator), scaled as the
    scheduler scales the job's input; for the 9-channel inpainting UNet the whole reference as known; for
    the 5-channel depth UNet the job's own depth channel, as the job's call has it (the job's conditions:
    its depth like its prompt)."""
    import torch

    lat = ref.latents.to(device=sample.device, dtype=sample.dtype)
    per_image = len(state_gens)
    noise = torch.stack([torch.randn(lat.shape[1:], generator=g).to(sample.device, sample.dtype)
                         for g in state_gens])
    copies = sample.shape[0] // per_image
    t0 = (t if torch.is_tensor(t) else torch.tensor(t)).flatten()[0]   # one timestep for the whole batch
    noisy = scheduler.add_noise(lat.expand(per_image, -1, -1, -1), noise, t0.reshape(1).to(sample.device))
    noisy = scheduler.scale_model_input(noisy, t0).repeat(copies, 1, 1, 1)
    channels = sample.shape[1]
    if channels == lat.shape[1]:
        return noisy
    if channels == 2 * lat.shape[1] + 1:   # inpainting: latents, mask, masked image
        known = lat.expand(noisy.shape[0], -1, -1, -1)
        return torch.cat([noisy, torch.zeros_like(noisy[:, :1]), known], dim=1)
    if channels == lat.shape[1] + 1:       # depth: latents, depth
        if sample.shape[-2:] != noisy.shape[-2:]:
            raise ValueError("a reference on the depth model must have the job's size")
        return torch.cat([noisy, sample[:, lat.shape[1]:]], dim=1)
    raise ValueError(f"a reference image does not work with a {channels}-channel UNet")


def attn1_modules(unet) -> list:
    from diffusers.models.attention_processor import Attention

    return [m for name, m in unet.named_modules() if name.endswith(".attn1") and isinstance(m, Attention)]


@contextlib.contextmanager
def applied(pipe, ref: Reference | None, unet=None) -> Iterator[None]:
    """Within the block, the calls of ``pipe`` (the job's view: its scheduler, its step count and whether
    it guides are read at each UNet call) inject ``ref``; nothing without one.  ``unet``: the UNet to hook
    when ``pipe.unet`` wraps it (restyle's ``DepthUNet``).  The UNet's processors and hooks are restored
    on exit, whatever happened."""
    if ref is None:
        yield
        return
    import torch

    from ..models.unet_compile import eager

    unet = pipe.unet if unet is None else unet
    state = _State(ref, guided=False)
    gens = [torch.Generator("cpu").manual_seed((int(s) + NOISE_SEED_OFFSET) % 2**32) for s in ref.seeds]
    calls = [0]
    ref.steps.clear()
    inner_call = [False]

    def before(module, args, kwargs):
        if inner_call[0]:
            return None
        step, calls[0] = calls[0], calls[0] + 1
        state.mode, state.bank = "", {}
        total = int(getattr(pipe, "_num_timesteps", 0) or 0)
        if total <= 0 or not inside(step, total, ref.start, ref.end):
            return None
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        ehs = args[2] if len(args) > 2 else kwargs["encoder_hidden_states"]
        state.guided = bool(getattr(pipe, "do_classifier_free_guidance", False))
        ref_in = _reference_sample(ref, gens, pipe.scheduler, sample, t)
        state.mode, inner_call[0] = "write", True
        try:
            module(ref_in, t, encoder_hidden_states=ehs, cross_attention_kwargs=kwargs.get("cross_attention_kwargs"),
                   return_dict=False)
        finally:
            inner_call[0] = False
        state.mode = "read"
        ref.steps.append(step)
        return None

    def after(module, args, kwargs, output):
        if not inner_call[0]:
            state.mode, state.bank = "", {}
        return None

    modules = attn1_modules(unet)
    originals = [m.processor for m in modules]
    handles = []
    with eager(unet):
        try:
            for i, (m, p) in enumerate(zip(modules, originals, strict=True)):
                m.set_processor(ReferenceAttnProcessor(p, state, i))
            handles.append(unet.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(unet.register_forward_hook(after, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()
            for m, p in zip(modules, originals, strict=True):
                m.set_processor(p)
            state.bank = {}
