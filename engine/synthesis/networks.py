"""StyleGAN2 generator in plain PyTorch ops: mapping network, synthesis network, glue.

The maths follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (2020)
and the two public PyTorch ports users bring checkpoints from (NVlabs stylegan2-ada-pytorch,
rosinality stylegan2-pytorch). Parameter names and shapes are those of NVlabs' ``G_ema`` so that
its network pickles load by name; rosinality checkpoints are renamed on load
(``engine.synthesis.checkpoints``).

Modulated convolution is evaluated as

    y = demod ⊙ conv(x ⊙ s, W)        s = affine(w),  demod_o = rsqrt(Σ_{i,k} (W_oik s_i)² + ε)

i.e. scale the input per channel, convolve with the *static* weight, scale the output per channel.
This is the same function as the per-sample weight formulation in the paper, but the weight
tensor never changes, so one batched convolution serves every sample and the graph exports to
ONNX / TensorRT with constant weights.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GeneratorConfig",
    "MappingNetwork",
    "SynthesisNetwork",
    "Generator",
    "seed_to_z",
    "demo_config",
    "demo_generator",
    "NOISE_MODES",
]

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
# Configuration


class ChannelTableConfig:
    """Shared by the config dataclasses that hold an ``img_resolution`` and a ``channels`` table
    {resolution: channels}: the table's checks and the JSON round trip (JSON object keys are
    strings; :meth:`_check_channel_table` turns them back into ints)."""

    _kind = "config"

    @property
    def resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    def _check_channel_table(self) -> None:
        """int keys, a power-of-two resolution, an entry for every resolution 4..img_resolution
        (extra entries dropped), in ascending order."""
        self.channels = {int(k): int(v) for k, v in self.channels.items()}
        res = self.img_resolution
        if not (isinstance(res, int) and 4 <= res <= 4096 and res & (res - 1) == 0):
            raise ValueError(f"img_resolution must be a power of two in [4, 4096], got {res!r}")
        missing = [r for r in self.resolutions if r not in self.channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}")
        self.channels = {r: self.channels[r] for r in self.resolutions}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = {str(k): v for k, v in self.channels.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls._kind} config keys: {unknown}")
        return cls(**d)


@dataclass
class GeneratorConfig(ChannelTableConfig):
    """Everything needed to build a :class:`Generator` (weights come separately).

    ``channels`` maps every resolution 4, 8, ..., ``img_resolution`` to its feature count.
    ``demod_weight_gain`` selects where the equalised-lr weight gain enters demodulation:
    NVlabs demodulates the raw weight (False), rosinality the gain-scaled weight (True); the two
    differ only through ε = 1e-8 but parity to 1e-4 is the promise, so we follow the source.
    """

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 0
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    img_resolution: int = 1024
    img_channels: int = 3
    channels: dict = field(default_factory=dict)
    conv_clamp: Optional[float] = None
    demod_weight_gain: bool = False
    use_noise: bool = True
    architecture: str = "skip"
    truncation_cutoff: Optional[int] = None
    normalize_z: bool = True      # StyleGAN2 normalises z's 2nd moment; a decoder whose z is the
                                  # data's own parameters (engine.train_demo --objective recon) must not
    z_rest: Optional[list] = None  # [[index, value], ...]: z coordinates an identity's seed gets fixed to
                                   # (a code whose coordinates mean something: the demo world's mouth
                                   # closed, eyes open, head straight), so a seed's face is at rest

    def __post_init__(self) -> None:
        self._check_channel_table()
        if self.c_dim != 0:
            raise ValueError("conditional generators (c_dim > 0) are not supported")
        if self.architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is supported, got {self.architecture!r}")
        if self.img_channels not in (1, 3, 4):
            raise ValueError(f"img_channels must be 1, 3 or 4, got {self.img_channels}")
        for name in ("z_dim", "w_dim", "mapping_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")
        if self.z_rest is not None:
            try:
                self.z_rest = [[int(i), float(v)] for i, v in self.z_rest]
            except (TypeError, ValueError):
                raise ValueError("z_rest must be a list of [index, value] pairs") from None
            if any(not 0 <= i < self.z_dim or not math.isfinite(v) for i, v in self.z_rest):
                raise ValueError(f"z_rest indices must be in 0..{self.z_dim - 1} with finite values")

    def to_dict(self) -> dict:
        d = super().to_dict()
        # fields added later are written only when set, so that older configs (and the hashes of
        # their generators) stay as they were
        if d.get("normalize_z") is True:
            del d["normalize_z"]
        if d.get("z_rest") is None:
            d.pop("z_rest", None)
        return d

    @property
    def num_ws(self) -> int:
        # b4: conv1 + torgb share the count 2; every further block adds conv0 + conv1.
        return 2 * len(self.resolutions)

    @classmethod
    def nvlabs(
        cls,
        *,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        lr_multiplier: float = 0.01,
        conv_clamp: Optional[float] = None,
        use_noise: bool = True,
        architecture: str = "skip",
    ) -> "GeneratorConfig":
        """Config in NVlabs terms: channels = min(channel_base // res, channel_max)."""
        log2 = int(math.log2(img_resolution))
        channels = {2**i: min(channel_base // 2**i, channel_max) for i in range(2, log2 + 1)}
        return cls(
            z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers, mapping_lr_multiplier=lr_multiplier,
            img_resolution=img_resolution, img_channels=img_channels, channels=channels,
            conv_clamp=conv_clamp, demod_weight_gain=False, use_noise=use_noise, architecture=architecture,
        )

    @classmethod
    def rosinality(
        cls,
        *,
        size: int = 1024,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        lr_mlp: float = 0.01,
    ) -> "GeneratorConfig":
        """Config in rosinality terms (its channel table is fixed up to 32 px)."""
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
        channels = {r: c * (channel_multiplier if r >= 64 else 1) for r, c in table.items() if r <= size}
        return cls(
            z_dim=style_dim, w_dim=style_dim, mapping_layers=n_mlp, mapping_lr_multiplier=lr_mlp,
            img_resolution=size, img_channels=3, channels=channels, conv_clamp=None, demod_weight_gain=True,
        )

    _kind = "generator"


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


# ---------------------------------------------------------------------------------------------
# Networks


class MappingNetwork(nn.Module):
    """z → w: normalise z (2nd moment), ``num_layers`` equalised FC + lrelu, broadcast, truncate."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01,
                 normalize_z: bool = True):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.normalize_z = bool(normalize_z)
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward_w(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, z_dim] → w [B, w_dim] (no broadcast, no truncation)."""
        _check_shape(z, [None, self.z_dim], "mapping input z")
        x = z.to(_acc_dtype(self.w_avg.dtype))
        if self.normalize_z:
            x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def truncate(self, ws: torch.Tensor, truncation_psi: float = 1.0,
                 truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        """Move ws [B, num_ws, w_dim] toward ``w_avg`` by ``psi`` on the first ``cutoff`` layers."""
        psi = float(truncation_psi)
        if not math.isfinite(psi):
            raise ValueError(f"truncation_psi must be finite, got {truncation_psi!r}")
        if psi == 1.0:
            return ws
        w_avg = self.w_avg.to(ws.dtype)
        if truncation_cutoff is None or truncation_cutoff >= ws.shape[1]:
            return w_avg.lerp(ws, psi)
        head = w_avg.lerp(ws[:, :truncation_cutoff], psi)
        return torch.cat([head, ws[:, truncation_cutoff:]], dim=1)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        w = self.forward_w(z)
        ws = w.unsqueeze(1).expand(-1, self.num_ws, -1)
        return self.truncate(ws, truncation_psi, truncation_cutoff)


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] → image [B, C, R, R] float32 (float64 for a double model), about [-1, 1].

    Compute dtype follows the parameters (``.to(torch.float16)`` etc.); styles, demodulation and
    the skip image stay in float32. ``channels_last = True`` runs convolutions in NHWC.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: dict, *,
                 use_noise: bool = True, conv_clamp: Optional[float] = None, demod_weight_gain: bool = False):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.channels_last = False
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            setattr(self, f"b{res}", SynthesisBlock(in_ch, channels[res], w_dim, res, img_channels,
                                                    use_noise=use_noise, conv_clamp=conv_clamp,
                                                    demod_weight_gain=demod_weight_gain))
        self.num_ws = 2 * len(self.block_resolutions)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        _check_shape(ws, [None, self.num_ws, self.w_dim], "synthesis input ws")
        dtype = self.b4.const.dtype
        ws = ws.to(_acc_dtype(dtype))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, dtype, memory_format)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """Mapping + synthesis. ``G(z)`` → image; ``G.mapping(z)`` → ws; ``G.synthesis(ws)`` → image."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim = config.z_dim, config.w_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels
        self.synthesis = SynthesisNetwork(
            config.w_dim, config.img_resolution, config.img_channels, config.channels,
            use_noise=config.use_noise, conv_clamp=config.conv_clamp, demod_weight_gain=config.demod_weight_gain,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, self.num_ws, config.mapping_layers,
                                      config.mapping_lr_multiplier, normalize_z=config.normalize_z)
        self.eval().requires_grad_(False)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                noise_mode: str = "const") -> torch.Tensor:
        cutoff = self.config.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    def set_channels_last(self, enabled: bool = True) -> "Generator":
        """Run synthesis convolutions in NHWC (weights converted too)."""
        self.synthesis.channels_last = bool(enabled)
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for p in self.synthesis.parameters():
            if p.ndim == 4:
                p.data = p.data.contiguous(memory_format=fmt)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.synthesis.b4.const.dtype

    @property
    def device(self) -> torch.device:
        return self.synthesis.b4.const.device


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The NVlabs convention: z for seed s is ``np.random.RandomState(s).randn(1, z_dim)``."""
    return np.random.RandomState(int(seed)).randn(1, z_dim)


# ---------------------------------------------------------------------------------------------
# The embedded default ("--generator demo")

DEMO_SEED = 20261127


def demo_config() -> GeneratorConfig:
    """128 px, narrow channels: renders in milliseconds on a CPU."""
    return GeneratorConfig(
        z_dim=128, w_dim=128, mapping_layers=4, mapping_lr_multiplier=0.01, img_resolution=128,
        channels={4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16}, conv_clamp=256.0,
    )


@torch.no_grad()
def demo_generator() -> Generator:
    """The built-in demo generator: deterministic weights from a fixed seed, made in memory.

    Weights follow StyleGAN2's initialisation (unit-normal weights, affine bias 1); noise strengths
    are set small and ``w_avg`` is the mean of 10,000 mapped z so truncation behaves as usual.
    """
    torch_gen = torch.Generator().manual_seed(DEMO_SEED)
    G = Generator(demo_config())
    for name, t in sorted(G.state_dict().items()):
        if name.endswith("noise_strength"):
            t.fill_(0.05)
        elif name.endswith("w_avg"):
            continue
        elif name.endswith("affine.bias"):
            t.fill_(1.0)
        elif name.endswith(".bias"):
            t.zero_()
        elif name.startswith("mapping.") and name.endswith(".weight"):
            t.copy_(torch.randn(t.shape, generator=torch_gen) / G.config.mapping_lr_multiplier)
        else:
            t.copy_(torch.randn(t.shape, generator=torch_gen))
    z = torch.randn(10_000, G.z_dim, generator=torch_gen)
    G.mapping.w_avg.copy_(G.mapping.forward_w(z).mean(dim=0))
    return G
