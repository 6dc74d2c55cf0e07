"""StyleGAN2 discriminator (residual architecture) in plain PyTorch ops, for training generators.

The network follows Karras et al. 2020 (config E/F, "resnet" D) as NVlabs stylegan2-ada-pytorch
builds it, and uses its parameter names (``b128.fromrgb``, ``b128.conv0``, ``b128.conv1``,
``b128.skip``, ..., ``b4.conv``, ``b4.fc``, ``b4.out``):

    x = lrelu(fromRGB(img))                                  at the image resolution R
    for each block R, R/2, ..., 8:
        y = skip(x)                 1x1 conv, FIR low-pass + 2x decimation, no bias, gain √½
        x = conv1(conv0(x))         3x3 conv; then FIR low-pass + 3x3 conv with stride 2, gain √½
        x = x + y
    epilogue at 4x4: minibatch-stddev channel → 3x3 conv → fc → fc to one logit

Every layer has an equalised learning rate (weights drawn N(0, 1) and scaled by 1/√fan_in at run
time), biases start at zero, activations are leaky ReLU (slope 0.2) times √2, clamped to
±``conv_clamp`` (times the layer gain) when set. Down-sampling low-pass filters with the
normalised [1, 3, 3, 1] ⊗ [1, 3, 3, 1] kernel before decimating, padded so that a 3x3 stride-2
convolution maps R to R/2 exactly as ``upfirdn2d`` + strided conv does in the reference.

The minibatch-stddev layer splits the batch into groups of ``mbstd_group_size`` samples taken
with a stride (sample i belongs to group i mod (N / G)), computes the standard deviation of every
feature over each group, averages it over channels (in ``mbstd_num_channels`` slices) and pixels,
and appends the result to every member of the group as extra feature maps. The batch size must be
a multiple of min(group size, batch size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ChannelTableConfig, GeneratorConfig
from .layers import (
    LRELU_GAIN,
    LRELU_SLOPE,
    FullyConnectedLayer,
    _check_shape,
    _fir_kernel,
)

__all__ = ["DiscriminatorConfig", "Discriminator", "MinibatchStdLayer", "downsample2d"]


@dataclass
class DiscriminatorConfig(ChannelTableConfig):
    """Everything needed to build a :class:`Discriminator`.

    ``channels`` maps every resolution 4, 8, ..., ``img_resolution`` to its feature count (the
    block at resolution r works with ``channels[r]`` features and hands ``channels[r // 2]`` on).
    """

    img_resolution: int = 128
    img_channels: int = 3
    channels: dict = field(default_factory=dict)
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    conv_clamp: Optional[float] = 256.0

    def __post_init__(self) -> None:
        self._check_channel_table()
        if any(c < 1 for c in self.channels.values()):
            raise ValueError(f"channel counts must be positive, got {self.channels}")
        if self.img_channels < 1:
            raise ValueError(f"img_channels must be positive, got {self.img_channels}")
        if self.mbstd_group_size < 1:
            raise ValueError(f"mbstd_group_size must be >= 1, got {self.mbstd_group_size}")
        if not 1 <= self.mbstd_num_channels <= self.channels[4] or self.channels[4] % self.mbstd_num_channels:
            raise ValueError(f"mbstd_num_channels must divide the 4 px channel count {self.channels[4]}, "
                             f"got {self.mbstd_num_channels}")
        if self.conv_clamp is not None and not (math.isfinite(self.conv_clamp) and self.conv_clamp > 0):
            raise ValueError(f"conv_clamp must be a positive number or None, got {self.conv_clamp!r}")

    @classmethod
    def nvlabs(cls, *, img_resolution: int = 1024, img_channels: int = 3, channel_base: int = 32768,
               channel_max: int = 512, mbstd_group_size: int = 4, conv_clamp: Optional[float] = 256.0
               ) -> "DiscriminatorConfig":
        """Config in NVlabs terms: channels = min(channel_base // res, channel_max)."""
        log2 = int(math.log2(img_resolution))
        channels = {2**i: min(channel_base // 2**i, channel_max) for i in range(2, log2 + 1)}
        return cls(img_resolution=img_resolution, img_channels=img_channels, channels=channels,
                   mbstd_group_size=mbstd_group_size, conv_clamp=conv_clamp)

    @classmethod
    def matching(cls, generator: GeneratorConfig, **kwargs) -> "DiscriminatorConfig":
        """The discriminator with the generator's channel table (as NVlabs pairs G and D)."""
        return cls(img_resolution=generator.img_resolution, img_channels=generator.img_channels,
                   channels=dict(generator.channels), **kwargs)

    _kind = "discriminator"


# ---------------------------------------------------------------------------------------------
# Layers


def downsample2d(x: torch.Tensor, pad: int = 1, stride: int = 2) -> torch.Tensor:
    """Low-pass x [B, C, H, W] with the normalised [1,3,3,1]⊗[1,3,3,1] kernel (``pad`` zeros each
    side), keeping every ``stride``-th sample. pad=1, stride=2 halves H and W (the 2x decimation
    of a 1x1 down-sampling layer); pad=2, stride=1 is the blur before a 3x3 stride-2 convolution."""
    c = x.shape[1]
    return F.conv2d(x, _fir_kernel(c, x.dtype, x.device, gain=1.0), stride=stride, padding=pad, groups=c)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution, optional 2x FIR down-sampling, bias, activation, gain and clamp.

    y = clamp(act(conv(x, W / √fan_in) + b) · gain_act · gain, ±conv_clamp · gain)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", down: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
        if down not in (1, 2):
            raise ValueError("down must be 1 or 2")
        if kernel_size not in (1, 3):
            raise ValueError("kernel_size must be 1 or 3")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.down, self.conv_clamp = activation, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        if self.down == 2 and self.kernel_size == 1:
            x = F.conv2d(downsample2d(x, pad=1, stride=2), w, b)
        elif self.down == 2:
            x = F.conv2d(downsample2d(x, pad=2, stride=1), w, b, stride=2)
        else:
            x = F.conv2d(x, w, b, padding=self.kernel_size // 2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE)
        g = self.act_gain * gain
        if g != 1:
            x = x * g
        if self.conv_clamp is not None:
            c = self.conv_clamp * gain
            x = x.clamp(-c, c)
        return x


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual D: [fromRGB] → conv0 → conv1 (2x down) + 1x1 skip (2x down)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, *, conv_clamp: Optional[float]):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return x + y


class MinibatchStdLayer(nn.Module):
    """Append the per-group feature standard deviation as ``num_channels`` extra maps."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = int(group_size), int(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch-stddev: batch size {n} is not a multiple of the group size {g}")
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, h, w)     # sample i = member i // (n/g) of group i % (n/g)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()   # [n/g, f, c/f, h, w]
        y = y.mean(dim=[2, 3, 4]).reshape(n // g, f, 1, 1)
        y = y.repeat(g, 1, h, w)                       # back to every member of its group
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch-stddev → 3x3 conv → fc (c·16 → c) → fc to one logit."""

    def __init__(self, in_channels: int, *, mbstd_group_size: int, mbstd_num_channels: int,
                 conv_clamp: Optional[float]):
        super().__init__()
        self.in_channels = in_channels
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """img [B, C, R, R] (float, about [-1, 1]) → logits [B, 1]: large for real, small for generated.

    Any power-of-two R ≥ 4 (at R = 4 only the epilogue runs, on a fromRGB of the image). The batch
    size must be a multiple of min(``mbstd_group_size``, B).
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        ch = config.channels
        self.block_resolutions = [r for r in reversed(config.resolutions) if r > 4]
        for i, res in enumerate(self.block_resolutions):
            setattr(self, f"b{res}", DiscriminatorBlock(0 if i == 0 else ch[res], ch[res], ch[res // 2], res,
                                                        config.img_channels, conv_clamp=config.conv_clamp))
        if not self.block_resolutions:  # a 4 px D still needs to read colour
            self.fromrgb = Conv2dLayer(config.img_channels, ch[4], 1, activation="lrelu", conv_clamp=config.conv_clamp)
        self.b4 = DiscriminatorEpilogue(ch[4], mbstd_group_size=config.mbstd_group_size,
                                        mbstd_num_channels=config.mbstd_num_channels, conv_clamp=config.conv_clamp)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        _check_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution], "discriminator input")
        img = img.to(self.b4.fc.weight.dtype)
        x = self.fromrgb(img) if not self.block_resolutions else None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)
