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

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from engine.synthesis.config import DEMO_SEED, GeneratorConfig, demo_config
from engine.synthesis.layers import (
    NOISE_MODES,
    FullyConnectedLayer,
    SynthesisBlock,
    _acc_dtype,
    _check_shape,
)

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
