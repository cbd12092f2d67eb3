"""Row 11: what one control layer costs.  A ControlNet runs the UNet's encoder half again at every step
(diffusers' ControlNet pipelines call it, then the UNet with its residuals), so one control's cost is
measured as a share of a guided 512² inpaint step: the UNet alone against ControlNet + UNet, both in the
engine's dtype, with a full-size random-weight SD 2.1 ControlNet (``ControlNetModel.from_unet`` shapes)
beside the full-size inpainting UNet.  FLOPs come from torch's counter on the meta device."""

from __future__ import annotations

from .common import Row, best_of, fmt_s, gib
from .profiles import Profile

GOAL_SHARE = 0.6   # a control re-runs the encoder half and the middle block: well under a whole step


def controlnet_config(unet_config: dict) -> dict:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**unet_config, "in_channels": 4})
        return dict(ControlNetModel.from_unet(unet, load_weights_from_unet=False).config)


def count_flops(unet, net, inputs) -> tuple[int, int]:
    """(UNet FLOPs, ControlNet FLOPs) of one guided step, counted on the meta device."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    x, ctx, cond = (v.to("meta", torch.float32) for v in (inputs[0], inputs[2], inputs[3]))
    t = inputs[1].to("meta")
    with torch.device("meta"):
        u = UNet2DConditionModel.from_config(unet.config)
        c = ControlNetModel.from_config(net.config)
        with torch.inference_mode(), FlopCounterMode(display=False) as cu:
            u(x, t, encoder_hidden_states=ctx)
        with torch.inference_mode(), FlopCounterMode(display=False) as cc:
            c(x[:, :4], t, encoder_hidden_states=ctx, controlnet_cond=cond)
    return int(cu.get_total_flops()), int(cc.get_total_flops())


def run(profile: Profile, models, log) -> Row:
    import torch
    from diffusers import ControlNetModel

    from ..tiny_models import _build_module, _fill_random
    from .unet import step_inputs

    unet = models.get("inpaint").pipe.unet
    size = profile.size
    config = controlnet_config(dict(unet.config))
    net = _build_module(lambda: ControlNetModel.from_config(config), not profile.tiny, 11)
    if profile.tiny:
        _fill_random(net, 11)
    net = net.to(unet.dtype).eval().requires_grad_(False)
    x, t, ctx = step_inputs(unet, 2, size, unet.dtype)
    cond = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(unet.dtype)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    log(f"row 11: ControlNet of {weights / 2**30:.2f} GiB ({str(unet.dtype).replace('torch.', '')}); timing steps")

    def plain():
        unet(x, t, encoder_hidden_states=ctx)

    def control_only():
        return net(x[:, :4], t, encoder_hidden_states=ctx, controlnet_cond=cond, return_dict=False)

    def controlled():
        down, mid = control_only()
        unet(x, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    with torch.inference_mode():
        t_plain, plain_all = best_of(plain, profile.step_repeats)
        t_net, net_all = best_of(control_only, profile.step_repeats)
        t_both, both_all = best_of(controlled, profile.step_repeats)
    flops_unet, flops_net = count_flops(unet, net, (x, t, ctx, cond))
    # The ControlNet timed alone against the UNet alone: on a shared machine the difference of two whole
    # steps (with and without it) drowns in the noise; both steps are kept in the figures.
    share, flop_share = t_net / t_plain, flops_net / flops_unet
    log(f"row 11: step {fmt_s(t_plain)}, ControlNet alone {fmt_s(t_net)} ({share:.0%}), step with one control "
        f"{fmt_s(t_both)}; FLOPs {flop_share:.0%} of the UNet's")
    figures = {"size": size, "batch": 2, "dtype": str(unet.dtype).replace("torch.", ""),
               "step_s": t_plain, "step_all_s": plain_all, "controlnet_s": t_net, "controlnet_all_s": net_all,
               "step_with_control_s": t_both, "step_with_control_all_s": both_all, "share": share,
               "step_difference_share": (t_both - t_plain) / t_plain,
               "gflop_unet": flops_unet / 1e9, "gflop_controlnet": flops_net / 1e9,
               "flop_share": flops_net / flops_unet, "controlnet_weight_bytes": weights}
    measured = (f"one control costs {flop_share:.0%} of a guided {size}² inpaint step's FLOPs; timed, the ControlNet "
                f"takes {fmt_s(t_net)} beside the UNet's {fmt_s(t_plain)} ({share:.0%}); its weights {gib(weights)}, "
                f"text encoder and VAE shared")
    return Row(11, "A control costs part of a step", measured, f"≤ {GOAL_SHARE:.0%} of a step",
               max(share, flop_share) <= GOAL_SHARE, figures)
