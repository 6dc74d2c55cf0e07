"""The discriminator of an NVlabs network pickle: read with the safe unpickler into our
Discriminator with the same outputs, refused with a reason (not an error) when it cannot be used,
and used by ``engine.invert`` as the feature loss. The pickles are written in NVlabs' layout by
``tests/formats.py`` (no real NVlabs pickle can be downloaded here)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import formats
from engine.synthesis.discriminator import Discriminator, DiscriminatorConfig
from engine.synthesis.formats.nvlabs_discriminator import read_discriminator
from engine.synthesis.networks import GeneratorConfig
from repo_paths import REPO

CFG = GeneratorConfig.nvlabs(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16,
                             mapping_layers=2, conv_clamp=256)


@pytest.fixture(scope="module")
def G():
    return formats.random_generator(CFG, seed=3)


def _D(seed: int, **kw) -> Discriminator:
    torch.manual_seed(seed)
    D = Discriminator(DiscriminatorConfig.matching(CFG, mbstd_group_size=2, **kw))
    with torch.no_grad():                        # biases are zero at init: make them count
        for name, p in D.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return D.eval()


def _pickle(G, D, path):
    snap = formats.nvlabs_snapshot(G)
    if D is not None:
        snap["D"] = formats.nvlabs_discriminator(D)
    return formats.dump_nvlabs_pickle(snap, path)


def test_the_pickles_discriminator_reads_back_with_the_same_outputs(G, tmp_path):
    D = _D(7)
    path = _pickle(G, D, tmp_path / "net.pkl")
    back, why = read_discriminator(path)
    assert back is not None, why
    assert back.config.channels == D.config.channels and back.config.mbstd_group_size == 2
    imgs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back(imgs), D(imgs))
    assert not any(p.requires_grad for p in back.parameters())


def test_a_discriminator_that_cannot_be_used_gives_a_reason(G, tmp_path):
    # the writer's token D (epilogue only), as real test snapshots carry
    path = _pickle(G, None, tmp_path / "token.pkl")
    D, why = read_discriminator(path)
    assert D is None and "no b" in why, why
    snap = formats.nvlabs_snapshot(G)
    snap["D"] = formats.nvlabs_discriminator(_D(1))
    snap["D"].state["_init_kwargs"]["c_dim"] = 10
    D, why = read_discriminator(formats.dump_nvlabs_pickle(snap, tmp_path / "cond.pkl"))
    assert D is None and "conditional" in why
    del snap["D"]
    D, why = read_discriminator(formats.dump_nvlabs_pickle(snap, tmp_path / "none.pkl"))
    assert D is None and "no NVlabs discriminator" in why
    snap["D"] = formats.nvlabs_discriminator(_D(1))
    snap["D"].state["_modules"]["b4"].state["_modules"]["fc"].state["_parameters"]["weight"] = \
        torch.nn.Parameter(torch.zeros(3, 3), requires_grad=False)
    D, why = read_discriminator(formats.dump_nvlabs_pickle(snap, tmp_path / "shape.pkl"))
    assert D is None and "b4.fc.weight" in why and "shape" in why


def test_invert_uses_the_checkpoints_discriminator(G, tmp_path):
    """``engine.invert`` on an NVlabs pickle with a D: the feature loss is in the report's losses,
    and the line says so; --no-disc leaves it out."""
    from PIL import Image

    path = _pickle(G, _D(7), tmp_path / "net.pkl")
    with torch.no_grad():
        img = G(torch.randn(1, CFG.z_dim, generator=torch.Generator().manual_seed(4)), truncation_psi=0.5)
    crop = ((img[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    photo = tmp_path / "crop.png"
    Image.fromarray(np.ascontiguousarray(crop)).save(photo)

    def run(*extra):
        r = subprocess.run([sys.executable, "-m", "engine.invert", str(photo), "--generator", str(path),
                            "--aligned", "--out", str(tmp_path / "me.npz"), "--steps", "5", "--wplus-steps", "2",
                            "--quiet", *extra], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return r, json.loads(r.stdout.strip().splitlines()[-1])

    r, summary = run()
    assert "discriminator-feature loss: the checkpoint's D (32 px)" in r.stderr, r.stderr
    assert summary["final"]["disc"] >= 0
    r, summary = run("--no-disc")
    assert "disc" not in summary["final"] and "discriminator" not in r.stderr
