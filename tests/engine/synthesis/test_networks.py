"""The generator's maths against direct reference formulations written out here in full.

The fast path evaluates modulated convolution as scale-input → static conv → demodulate-output and
up-samples with transposed convolutions; the references below follow the paper literally
(per-sample modulated weights, grouped convolution, explicit zero insertion + FIR filtering).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.synthesis.networks import (
    Generator,
    GeneratorConfig,
    demo_config,
    demo_generator,
    seed_to_z,
)
from engine.synthesis.layers import upsample2d


def small_config(**kw) -> GeneratorConfig:
    base = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=256, channel_max=32, mapping_layers=2)
    base.update(kw)
    return GeneratorConfig.nvlabs(**base)


def randomised(cfg: GeneratorConfig, seed: int = 0) -> Generator:
    """A generator whose every parameter and buffer is random (nothing left at its init value)."""
    G = Generator(cfg)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            t.copy_(torch.randn(t.shape, generator=rng) * (0.3 if "noise_strength" in name else 1.0)
                    + (1.0 if name.endswith("affine.bias") else 0.0))
    return G


def fir_upsample_reference(x: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """upfirdn2d(x, [1,3,3,1]⊗[1,3,3,1]/64 · 4, up=2, pad=(pad0, pad1)) written out literally."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, h * 2, w * 2, dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    up = F.pad(up, [pad0, pad1, pad0, pad1])
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    f2 = torch.outer(f, f)
    f2 = (f2 / f2.sum() * 4).flip([0, 1])  # convolution, not correlation
    return F.conv2d(up, f2.expand(c, 1, 4, 4), groups=c)


def blur_reference(x: torch.Tensor, pad: int) -> torch.Tensor:
    c = x.shape[1]
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    f2 = torch.outer(f, f)
    f2 = f2 / f2.sum() * 4
    return F.conv2d(F.pad(x, [pad] * 4), f2.expand(c, 1, 4, 4), groups=c)


def modulated_conv_reference(x, weight, styles, *, demodulate, up, demod_gain=1.0):
    """Paper formulation: per-sample weights W'_b = W ⊙ s_b, demodulated, grouped convolution."""
    b, i, h, w = x.shape
    o = weight.shape[0]
    wb = weight.unsqueeze(0) * styles.reshape(b, 1, i, 1, 1)  # [B, O, I, k, k]
    if demodulate:
        d = ((wb * demod_gain).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() * demod_gain
        wb = wb * d.reshape(b, o, 1, 1, 1)
    xg = x.reshape(1, b * i, h, w)
    if up == 1:
        y = F.conv2d(xg, wb.reshape(b * o, i, *weight.shape[2:]), padding=weight.shape[-1] // 2, groups=b)
        return y.reshape(b, o, *y.shape[2:])
    wt = wb.transpose(1, 2).reshape(b * i, o, *weight.shape[2:])
    y = F.conv_transpose2d(xg, wt, stride=2, groups=b)
    y = y.reshape(b, o, *y.shape[2:])
    return blur_reference(y, 1)


def test_upsample2d_matches_literal_upfirdn():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(upsample2d(x), fir_upsample_reference(x, 2, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demod_weight_gain", [False, True])
def test_synthesis_layer_equals_per_sample_weight_formulation(up, demod_weight_gain):
    cfg = small_config()
    cfg.demod_weight_gain = demod_weight_gain
    G = randomised(cfg).double()
    layer = G.synthesis.b16.conv0 if up == 2 else G.synthesis.b16.conv1
    x = torch.randn(3, layer.in_channels, 16 // up, 16 // up, dtype=torch.float64)
    w = torch.randn(3, cfg.w_dim, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x, w, noise_mode="none")
        styles = F.linear(w, layer.affine.weight * layer.affine.weight_gain, layer.affine.bias)
        gain = 1 / math.sqrt(layer.in_channels * 9) if demod_weight_gain else 1.0
        y = modulated_conv_reference(x, layer.weight, styles, demodulate=True, up=up, demod_gain=gain)
        want = F.leaky_relu(y + layer.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_const_noise_and_clamp_follow_the_definition():
    cfg = small_config(conv_clamp=0.5)
    G = randomised(cfg).double()
    layer = G.synthesis.b8.conv1
    x = torch.randn(2, layer.in_channels, 8, 8, dtype=torch.float64)
    w = torch.randn(2, cfg.w_dim, dtype=torch.float64)
    with torch.no_grad():
        styles = F.linear(w, layer.affine.weight * layer.affine.weight_gain, layer.affine.bias)
        y = modulated_conv_reference(x, layer.weight, styles, demodulate=True, up=1)
        y = y + layer.noise_const * layer.noise_strength
        want = (F.leaky_relu(y + layer.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
        got = layer(x, w, noise_mode="const")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert (got.abs() == 0.5).any(), "the clamp should have been active in this test"


def test_torgb_is_unmodulated_1x1_with_style_gain():
    G = randomised(small_config()).double()
    rgb = G.synthesis.b32.torgb
    x = torch.randn(2, rgb.weight.shape[1], 32, 32, dtype=torch.float64)
    w = torch.randn(2, G.w_dim, dtype=torch.float64)
    with torch.no_grad():
        styles = F.linear(w, rgb.affine.weight * rgb.affine.weight_gain, rgb.affine.bias)
        styles = styles / math.sqrt(rgb.weight.shape[1])
        want = modulated_conv_reference(x, rgb.weight, styles, demodulate=False, up=1)
        want = want + rgb.bias.reshape(1, -1, 1, 1)
        torch.testing.assert_close(rgb(x, w), want, rtol=1e-9, atol=1e-9)


def test_mapping_matches_equalised_lr_mlp():
    G = randomised(small_config(mapping_layers=3)).double()
    z = torch.randn(5, G.z_dim, dtype=torch.float64)
    with torch.no_grad():
        x = z / (z.square().mean(1, keepdim=True) + 1e-8).sqrt()
        for i in range(3):
            fc = getattr(G.mapping, f"fc{i}")
            x = F.linear(x, fc.weight * (0.01 / math.sqrt(fc.in_features)), fc.bias * 0.01)
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        ws = G.mapping(z.float())
    assert ws.shape == (5, G.num_ws, G.w_dim)
    torch.testing.assert_close(ws[:, 0].double(), x, rtol=1e-5, atol=1e-5)
    assert torch.equal(ws[:, 0], ws[:, -1])


def test_truncation_psi_and_cutoff():
    G = randomised(small_config())
    z = torch.randn(3, G.z_dim)
    full = G.mapping(z)
    avg = G.mapping.w_avg
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), avg.expand_as(full))
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=4)
    torch.testing.assert_close(half[:, :4], avg + 0.5 * (full[:, :4] - avg))
    torch.testing.assert_close(half[:, 4:], full[:, 4:])
    with pytest.raises(ValueError, match="finite"):
        G.mapping(z, truncation_psi=float("nan"))


def test_noise_modes():
    G = randomised(small_config())
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        rand_a, rand_b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        none = G.synthesis(ws, noise_mode="none")
        for name, t in G.state_dict().items():
            if name.endswith("noise_strength"):
                t.zero_()
        const_zero = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(const_a, none)
    torch.testing.assert_close(none, const_zero)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="sometimes")


def test_ws_shape_is_checked():
    G = randomised(small_config())
    with pytest.raises(ValueError, match=r"synthesis input ws: expected shape \[\*, 8, 32\]"):
        G.synthesis(torch.zeros(1, 9, 32))


@pytest.mark.parametrize("dtype,min_psnr", [(torch.bfloat16, 30.0), (torch.float16, 45.0)])
def test_reduced_precision_tracks_float32(dtype, min_psnr):
    G = demo_generator()
    ws = G.mapping(torch.from_numpy(np.concatenate([seed_to_z(s, G.z_dim) for s in range(2)])).float())
    with torch.no_grad():
        ref = G.synthesis(ws)
        G.to(dtype)
        low = G.synthesis(ws)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    mse = (low - ref).square().mean().item()
    psnr = 10 * math.log10(4.0 / mse)  # peak-to-peak range 2 ([-1, 1])
    assert psnr > min_psnr, f"{dtype}: PSNR {psnr:.1f} dB"


def test_channels_last_gives_the_same_image():
    G = demo_generator()
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        ref = G.synthesis(ws)
        G.set_channels_last(True)
        nhwc = G.synthesis(ws)
    torch.testing.assert_close(nhwc, ref, rtol=0, atol=1e-5)


def test_seed_to_z_is_the_nvlabs_convention():
    z = seed_to_z(7, 512)
    assert z.shape == (1, 512)
    np.testing.assert_array_equal(z, np.random.RandomState(7).randn(1, 512))


def test_demo_generator_is_deterministic_and_not_degenerate():
    a, b = demo_generator(), demo_generator()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    cfg = demo_config()
    assert cfg.img_resolution == 128 and a.num_ws == 12
    with torch.no_grad():
        img = a(torch.from_numpy(seed_to_z(0, a.z_dim)).float())
    assert img.shape == (1, 3, 128, 128)
    assert torch.isfinite(img).all() and img.std() > 0.05
    assert a.mapping.w_avg.abs().sum() > 0


def test_config_round_trip_and_validation():
    cfg = GeneratorConfig.rosinality(size=64, style_dim=64, n_mlp=2, channel_multiplier=1)
    assert cfg.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256}
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="power of two"):
        small_config(img_resolution=48)
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="conditional"):
        GeneratorConfig(img_resolution=8, channels={4: 8, 8: 8}, c_dim=10)
