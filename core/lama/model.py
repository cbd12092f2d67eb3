"""The big-lama generator: a ResNet of fast Fourier convolutions (Suvorov et al., "Resolution-robust
Large Mask Inpainting with Fourier Convolutions", WACV 2022), in plain torch.

Written for this project from the paper and the published configuration of big-lama
(``configs/training/big-lama.yaml`` of advimman/lama: ``ffc_resnet``, 4 → 3 channels, ngf 64,
3 downsamplings, 18 residual blocks, global ratio 0.75, no local Fourier unit, sigmoid output).
The module tree and parameter names follow the reference implementation exactly, so that the
official checkpoint's ``generator.*`` tensors map one to one onto ``LamaGenerator.state_dict()``:

    model.0             reflection pad 3
    model.1             FFC 7×7, 4 → ngf, local only                       (ffc.convl2l, bn_l)
    model.2 .. 2+d-1    FFC 3×3 stride 2, local only; the last one splits its output into
                        local and global parts                             (ffc.convl2l/convl2g, bn_l/bn_g)
    model.2+d ..        residual blocks of two FFCs; the global part goes through a spectral
                        transform (1×1 conv → FFT → 1×1 conv on real/imaginary → inverse FFT)
    then                concatenation of local and global parts
    then                d × (transposed conv 3×3 stride 2, batch norm, ReLU)
    last                reflection pad 3, conv 7×7 ngf → 3, sigmoid

Inference only: batch norms use their running statistics (``eval()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LamaConfig:
    input_nc: int = 4             # RGB with the hole zeroed, plus the mask
    output_nc: int = 3
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    ratio_global: float = 0.75    # share of the bottleneck channels that go through the Fourier path
    max_features: int = 1024

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LamaConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def features(self, level: int) -> int:
        """Channels after ``level`` downsamplings."""
        return min(self.max_features, self.ngf * 2 ** level)

    @property
    def bottleneck(self) -> int:
        return self.features(self.n_downsampling)

    @property
    def first_block(self) -> int:
        """Index in ``model`` of the first residual block."""
        return 2 + self.n_downsampling


BIG_LAMA = LamaConfig()


def _split(channels: int, ratio: float) -> tuple[int, int]:
    """(local, global) channel counts of an FFC side, as the reference computes them."""
    g = int(channels * ratio)
    return channels - g, g


class FourierUnit(nn.Module):
    """1×1 convolution in the frequency domain: real and imaginary parts as 2c channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        spec = torch.fft.rfftn(x.float(), dim=(-2, -1), norm="ortho")
        # (b, c, h, w') complex → (b, c, 2, h, w') → (b, 2c, h, w'): channel 2k is real, 2k+1 imaginary
        spec = torch.stack((spec.real, spec.imag), dim=2).reshape(b, -1, h, spec.shape[-1])
        spec = self.relu(self.bn(self.conv_layer(spec.to(x.dtype))))
        spec = spec.reshape(b, -1, 2, h, spec.shape[-1]).float()
        spec = torch.complex(spec[:, :, 0], spec[:, :, 1])
        return torch.fft.irfftn(spec, s=(h, w), dim=(-2, -1), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """The global branch: halve the channels, add the Fourier unit's output, restore the channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, half, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.fu = FourierUnit(half, half)
        self.conv2 = nn.Conv2d(half, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


def _conv_or_none(cin: int, cout: int, kernel: int, stride: int, padding: int, dilation: int) -> nn.Module:
    if cin == 0 or cout == 0:
        return nn.Identity()
    return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=False, padding_mode="reflect")


class FFC(nn.Module):
    """Fast Fourier convolution: four paths between the local and the global channel groups."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        in_l, in_g = _split(in_channels, ratio_gin)
        out_l, out_g = _split(out_channels, ratio_gout)
        self.has_local_out, self.has_global_out = out_l > 0, out_g > 0
        args = (kernel_size, stride, padding, dilation)
        self.convl2l = _conv_or_none(in_l, out_l, *args)
        self.convl2g = _conv_or_none(in_l, out_g, *args)
        self.convg2l = _conv_or_none(in_g, out_l, *args)
        self.convg2g = SpectralTransform(in_g, out_g) if in_g and out_g else nn.Identity()
        if stride != 1 and in_g:
            raise ValueError("a strided FFC with a global input is not part of big-lama")

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor | None):
        out_l = out_g = None
        if self.has_local_out:
            out_l = self.convl2l(x_l)
            if x_g is not None and not isinstance(self.convg2l, nn.Identity):
                out_l = out_l + self.convg2l(x_g)
        if self.has_global_out:
            out_g = self.convl2g(x_l)
            if x_g is not None and not isinstance(self.convg2g, nn.Identity):
                out_g = out_g + self.convg2g(x_g)
        return out_l, out_g


class FFCBnAct(nn.Module):
    """FFC followed by batch norm and ReLU on each side (the reference's ``FFC_BN_ACT``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding, dilation)
        out_l, out_g = _split(out_channels, ratio_gout)
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else nn.Identity()
        self.act_l = nn.ReLU(inplace=True) if out_l else nn.Identity()
        self.act_g = nn.ReLU(inplace=True) if out_g else nn.Identity()

    def forward(self, x):
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        y_l, y_g = self.ffc(x_l, x_g)
        if y_l is not None:
            y_l = self.act_l(self.bn_l(y_l))
        if y_g is not None:
            y_g = self.act_g(self.bn_g(y_g))
        return y_l, y_g


class FFCResnetBlock(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.conv1 = FFCBnAct(dim, dim, 3, ratio, ratio, padding=1)
        self.conv2 = FFCBnAct(dim, dim, 3, ratio, ratio, padding=1)

    def forward(self, x):
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return x_l + y_l, x_g + y_g


class ConcatTuple(nn.Module):
    def forward(self, x):
        x_l, x_g = x
        return x_l if x_g is None else torch.cat((x_l, x_g), dim=1)


class LamaGenerator(nn.Module):
    """Input: (B, 4, H, W) = RGB in [0, 1] with the hole set to 0, then the mask (1 = hole).
    H and W must be multiples of 2**n_downsampling.  Output: (B, 3, H, W) RGB in [0, 1]."""

    def __init__(self, config: LamaConfig = BIG_LAMA):
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), FFCBnAct(c.input_nc, c.ngf, 7, 0.0, 0.0)]
        for i in range(c.n_downsampling):
            ratio_out = c.ratio_global if i == c.n_downsampling - 1 else 0.0
            layers.append(FFCBnAct(c.features(i), c.features(i + 1), 3, 0.0, ratio_out, stride=2, padding=1))
        layers += [FFCResnetBlock(c.bottleneck, c.ratio_global) for _ in range(c.n_blocks)]
        layers.append(ConcatTuple())
        for i in range(c.n_downsampling, 0, -1):
            cin, cout = c.features(i), min(c.max_features, c.ngf * 2 ** i // 2)
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c.ngf, c.output_nc, 7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    @property
    def multiple(self) -> int:
        return 2 ** self.config.n_downsampling

    def forward(self, x: torch.Tensor, on_layer=None) -> torch.Tensor:
        """``on_layer(i, n)`` is called after each of the n top-level layers (progress, cancel)."""
        n = len(self.model)
        for i, layer in enumerate(self.model):
            x = layer(x)
            if on_layer is not None:
                on_layer(i + 1, n)
        return x
