"""Parity with the reference implementations, through the real file readers.

``tests/data/parity/*.npz`` hold images rendered by NVlabs stylegan2-ada-pytorch and rosinality
stylegan2-pytorch (CPU, float32, constant noise) from checkpoints made by ``tests/formats.py``;
``tests/make_parity_fixtures.py`` regenerates them from local checkouts of those repositories.
Here the same checkpoints are rebuilt in ``tmp_path``, read back with ``load_generator`` and
rendered with our Generator: max |ours - reference| must stay <= 1e-4.

The reduced-precision / channels_last tests compare against our own float32 output.
"""
import json
import math

import numpy as np
import pytest
import torch

from engine.synthesis.checkpoints import load_generator
from engine.synthesis.networks import Generator
from make_parity_fixtures import CASES, Case, load_fixture, state_sha256, z_batch

PARITY_ATOL = 1e-4
# Float32 rounding grows with the values: in the extreme-clamp case images reach ±725, where
# adjacent float32 numbers are 6e-5 apart and both implementations sit ~5e-4 from a float64
# evaluation. The bound is the larger of PARITY_ATOL and this fraction of max |reference|
# (for every O(10) image PARITY_ATOL is the larger).
PARITY_RTOL_OF_MAX = 2e-6
CASE_BY_NAME = {c.name: c for c in CASES}
REGENERATE = ("regenerate them with: python tests/make_parity_fixtures.py "
              "--nvlabs-repo PATH --rosinality-repo PATH")


def render(G: Generator, case: Case, psi: float, cutoff) -> torch.Tensor:
    z = z_batch(case.seeds, case.config.z_dim)
    with torch.inference_mode():
        return G(z, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")


def expected_images(fixture: dict, case: Case, psi: float, cutoff) -> np.ndarray:
    sel = [i for i in range(len(fixture["seeds"]))
           if fixture["truncation_psi"][i] == psi and fixture["cutoff"][i] == cutoff]
    assert [int(s) for s in fixture["seeds"][sel]] == list(case.seeds)
    return fixture["images"][sel]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """case name -> (Generator read from the written file, fixture dict); built once per module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            case = CASE_BY_NAME[name]
            fixture = load_fixture(case)
            assert fixture["config"] == json.loads(json.dumps(case.config.to_dict(), sort_keys=True)), (
                f"{case.fixture_path.name}: the case's config changed since the fixture was made; {REGENERATE}")
            G = case.generator()
            assert state_sha256(G) == str(fixture["state_sha256"]), (
                f"{case.fixture_path.name}: tests/formats.py random_generator (or the case's weight scaling) "
                f"no longer produces the weights the fixture was rendered from; {REGENERATE}")
            path = case.write(G, tmp_path_factory.mktemp(name))
            cache[name] = (load_generator(path), fixture)
        return cache[name]

    return get


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_matches_reference(loaded, name):
    case = CASE_BY_NAME[name]
    G, fixture = loaded(name)
    assert G.config.to_dict() == case.config.to_dict()
    for psi, cutoff in case.truncations:
        ours = render(G, case, psi, cutoff).numpy()
        ref = expected_images(fixture, case, psi, cutoff)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        diff = float(np.abs(ours - ref).max())
        tol = max(PARITY_ATOL, PARITY_RTOL_OF_MAX * float(np.abs(ref).max()))
        assert diff <= tol, (
            f"{name} psi={psi} cutoff={cutoff}: max |ours - {case.source}| = {diff:.3g} > {tol:.3g}")


@pytest.mark.parametrize("name, torgb_saturates", [
    ("nvlabs_32_clamp256_extreme", True),
    ("nvlabs_32_clamp256_saturated", False),
])
def test_clamp_cases_really_clamp(loaded, name, torgb_saturates):
    """The conv_clamp fixtures only prove something if outputs actually sit at ±conv_clamp."""
    case = CASE_BY_NAME[name]
    G, _ = loaded(name)
    clamp = case.config.conv_clamp
    saturated = {}
    hooks = [m.register_forward_hook(
                 lambda mod, inp, out, n=n: saturated.__setitem__(n, float((out.abs() >= clamp).float().mean())))
             for n, m in G.synthesis.named_modules() if n.endswith(("conv0", "conv1", "torgb"))]
    try:
        render(G, case, 1.0, None)
    finally:
        for h in hooks:
            h.remove()
    convs = {n: f for n, f in saturated.items() if not n.endswith("torgb")}
    torgbs = {n: f for n, f in saturated.items() if n.endswith("torgb")}
    assert len(convs) == 2 * len(case.config.resolutions) - 1
    assert all(f >= 0.01 for f in convs.values()), convs
    if torgb_saturates:
        assert all(f >= 0.01 for f in torgbs.values()), torgbs
    else:
        assert all(f == 0 for f in torgbs.values()), torgbs


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB with the reference's value range as peak."""
    peak = float(b.max() - b.min())
    mse = float((a.double() - b.double()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


# float16 convolutions on CPU are slow at rosinality's 512 channels, so float16 runs on the
# narrow NVlabs cases (including the one whose pre-clamp activations exceed float16's range).
# Measured (torch 2.13 CPU): bfloat16 54-59 dB, float16 72-78 dB.
@pytest.mark.parametrize("name, dtype, min_psnr", [
    ("nvlabs_64_clamp256", torch.bfloat16, 40.0),
    ("rosinality_32", torch.bfloat16, 40.0),
    ("nvlabs_64_clamp256", torch.float16, 60.0),
    ("nvlabs_32_clamp256_extreme", torch.float16, 60.0),
])
def test_reduced_precision_close_to_float32(loaded, name, dtype, min_psnr):
    case = CASE_BY_NAME[name]
    G, _ = loaded(name)
    reference = render(G, case, 0.7, None)
    G_low = Generator(G.config)
    G_low.load_state_dict(G.state_dict())
    G_low = G_low.to(dtype)
    out = render(G_low, case, 0.7, None)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert torch.isfinite(out).all()
    value = psnr(out, reference)
    assert value > min_psnr, f"{name} {dtype}: PSNR {value:.1f} dB vs float32"


# NHWC convolutions sum in another order. On these O(10) images float32 rounding alone puts
# our contiguous output 0.5-1.2e-5 from float64 (4608-term sums at rosinality's 512 channels),
# and channels_last measured 1e-5 (NVlabs 64 px) and 1.9e-5 (rosinality 32 px) from it.
CHANNELS_LAST_ATOL = 5e-5


@pytest.mark.parametrize("name", ["nvlabs_64_clamp256", "rosinality_32"])
def test_channels_last_matches_contiguous(loaded, name):
    case = CASE_BY_NAME[name]
    G, _ = loaded(name)
    reference = render(G, case, 1.0, None)
    G_cl = Generator(G.config)
    G_cl.load_state_dict(G.state_dict())
    G_cl.set_channels_last(True)
    out = render(G_cl, case, 1.0, None)
    diff = float((out - reference).abs().max())
    assert diff <= CHANNELS_LAST_ATOL, f"{name}: channels_last max diff {diff:.3g}"
