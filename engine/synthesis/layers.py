"""The layers of the StyleGAN2 synthesis network in plain PyTorch ops (the maths of the modulated
convolution: :mod:`engine.synthesis.networks`): fully connected layers with equalised learning
rate, the [1, 3, 3, 1] up-sampling filter, modulated 3×3 convolutions, toRGB, one synthesis block."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NOISE_MODES", "LRELU_SLOPE", "LRELU_GAIN", "FullyConnectedLayer", "SynthesisLayer", "ToRGBLayer",
           "SynthesisBlock", "upsample2d"]

NOISE_MODES = ("const", "random", "none")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
# The [1, 3, 3, 1] binomial low-pass filter used for every 2x up-sampling, as the separable 1-D
# taps of the normalised 2-D filter (outer product sums to 1).
_FIR_1D = (1.0, 3.0, 3.0, 1.0)


def _check_shape(t: torch.Tensor, shape: list, what: str) -> None:
    """Raise ValueError unless ``t`` has ``shape`` (``None`` matches any size)."""
    if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{what}: expected shape {want}, got {list(t.shape)}")


# ---------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: y = act(x (g W)ᵀ + b·lr), g = lr / sqrt(in).

    Evaluated in at least float32 (it is tiny and feeds the demodulation maths).
    """

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = _acc_dtype(self.weight.dtype)
        x = x.to(acc)
        w = self.weight.to(acc) * self.weight_gain
        b = self.bias.to(acc)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = F.leaky_relu(x.matmul(w.t()) + b, LRELU_SLOPE)
        return x * LRELU_GAIN


def _fir_kernel(channels: int, dtype: torch.dtype, device: torch.device, gain: float) -> torch.Tensor:
    """Depthwise 4x4 [1,3,3,1]⊗[1,3,3,1] low-pass kernel, normalised to sum ``gain``."""
    f = torch.tensor(_FIR_1D, dtype=torch.float64)
    f2 = torch.outer(f, f)
    f2 = f2 / f2.sum() * gain
    return f2.to(device=device, dtype=dtype).expand(channels, 1, 4, 4)


def upsample2d(img: torch.Tensor) -> torch.Tensor:
    """2x up-sampling with the [1,3,3,1] FIR filter (zero insertion, then filter with gain 4).

    Equal to ``upfirdn2d(img, f, up=2, padding=(2, 1))``: a transposed depthwise convolution
    with stride 2 whose full output is cropped by one sample on each side.
    """
    c = img.shape[1]
    k = _fir_kernel(c, img.dtype, img.device, gain=4.0)
    return F.conv_transpose2d(img, k, stride=2, padding=1, groups=c)


def _blur_after_transpose(x: torch.Tensor) -> torch.Tensor:
    """FIR low-pass (gain 4, pad 1 each side) applied after a stride-2 transposed 3x3 conv."""
    c = x.shape[1]
    k = _fir_kernel(c, x.dtype, x.device, gain=4.0)
    return F.conv2d(x, k, padding=1, groups=c)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for styles, demodulation and the skip image: float32, or float64 for a double model."""
    return torch.promote_types(dtype, torch.float32)


def _weight_sq(weight: torch.Tensor) -> torch.Tensor:
    """Σ_k W_oik² as [O, I] in float32 (float64 for a double model), cached per weight version
    in eager inference."""
    acc = _acc_dtype(weight.dtype)
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or weight.requires_grad:
        return weight.to(acc).square().sum(dim=[2, 3])
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    cached = getattr(weight, "_stylecast_wsq", None)
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().to(acc).square().sum(dim=[2, 3]))
        weight._stylecast_wsq = cached
    return cached[1]


def _bias_lrelu_clamp(x: torch.Tensor, bias: torch.Tensor, clamp: Optional[float]) -> torch.Tensor:
    """act(x + b)·√2, clamped to ±clamp. ``x`` must be a fresh tensor this layer owns; it is
    updated in place when no gradient is being recorded (saves memory traffic on large maps)."""
    b = bias.reshape(1, -1, 1, 1)
    if torch.is_grad_enabled() and (x.requires_grad or b.requires_grad):
        x = F.leaky_relu(x + b, LRELU_SLOPE) * LRELU_GAIN
        return x.clamp(-clamp, clamp) if clamp is not None else x
    x = F.leaky_relu(x.add_(b), LRELU_SLOPE, inplace=True).mul_(LRELU_GAIN)
    return x.clamp_(-clamp, clamp) if clamp is not None else x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (+ optional 2x up-sampling), noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: int = 1, use_noise: bool = True, conv_clamp: Optional[float] = None,
                 demod_weight_gain: bool = False):
        super().__init__()
        if up not in (1, 2):
            raise ValueError("up must be 1 or 2")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up = resolution, up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        fan_in = in_channels * 9
        self.weight_gain = 1.0 / math.sqrt(fan_in)
        # Demodulation is computed on (demod_gain · W); see GeneratorConfig.demod_weight_gain.
        self.demod_gain = self.weight_gain if demod_weight_gain else 1.0

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        batch = x.shape[0]
        styles = self.affine(w)  # [B, I] float32
        # demod_o = rsqrt(g² Σ_i s_i² Σ_k W_oik² + ε); multiplied by g because the conv below uses
        # the raw weight while the source convolves with g·W.
        wsq = _weight_sq(self.weight)  # [O, I]
        g = self.demod_gain
        dcoefs = (styles.square().matmul(wsq.t()) * (g * g) + 1e-8).rsqrt() * g  # [B, O]
        # Scale the input by s·(1/sqrt(fan_in)) and the output by the inverse, so activations stay
        # O(1) in reduced precision whatever the convention (the product is unchanged).
        in_scale = styles * self.weight_gain
        out_scale = dcoefs / self.weight_gain
        dtype = x.dtype
        x = x * in_scale.to(dtype).reshape(batch, -1, 1, 1)
        weight = self.weight.to(dtype)
        if self.up == 2:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = _blur_after_transpose(x)
        else:
            x = F.conv2d(x, weight, padding=1)
        out_scale = out_scale.to(dtype).reshape(batch, -1, 1, 1)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(batch, 1, self.resolution, self.resolution, device=x.device, dtype=dtype)
            noise = noise * self.noise_strength.to(dtype)
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(dtype)
        x = torch.addcmul(noise, x, out_scale) if noise is not None else x * out_scale
        return _bias_lrelu_clamp(x, self.bias.to(dtype), self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to colour, no demodulation, bias, optional clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = x * styles.to(x.dtype).reshape(x.shape[0], -1, 1, 1)
        x = F.conv2d(x, self.weight.to(x.dtype), bias=self.bias.to(x.dtype))
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: [2x-up conv0] → conv1 → toRGB, with the skip image up-sampled and summed."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, *, use_noise: bool, conv_clamp: Optional[float], demod_weight_gain: bool):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        kw = dict(use_noise=use_noise, conv_clamp=conv_clamp, demod_weight_gain=demod_weight_gain)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: str, dtype: torch.dtype, memory_format: torch.memory_format):
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = x.contiguous(memory_format=memory_format)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv]).to(ws.dtype)
        img = y if img is None else upsample2d(img) + y
        return x, img


