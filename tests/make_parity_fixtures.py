"""Regenerate ``tests/data/parity/*.npz``: images rendered by the two reference implementations.

    python tests/make_parity_fixtures.py \\
        --nvlabs-repo ~/src/stylegan2-ada-pytorch --rosinality-repo ~/src/stylegan2-pytorch

The reference code is imported from the user's own checkouts at run time; nothing of it is
contained here. For every case in :data:`CASES` the script

1. builds the case's generator with ``tests/formats.py``'s ``random_generator`` (plus the case's
   weight scaling), and records a SHA-256 of its state so a drifting writer is caught;
2. writes it in the case's source format (``write_nvlabs_pkl`` / ``write_rosinality_pt``);
3. builds the reference model with the same parameters:
   NVlabs ``training.networks.Generator(**nvlabs_init_kwargs(config))`` given our state dict
   (checked: the only keys it has and we lack are its fixed ``resample_filter`` buffers, which
   are also compared to the [1,3,3,1] filter);
   rosinality ``model.Generator(**rosinality_kwargs(config))`` loading ``g_ema`` of the written
   ``.pt`` with ``strict=True``, truncating toward the file's ``latent_avg``;
4. renders on CPU in float32 with constant noise (NVlabs ``noise_mode='const'``,
   ``force_fp32=True``; rosinality ``randomize_noise=False``) for
   ``z = np.random.RandomState(seed).randn(1, z_dim)``, one seed at a time;
5. saves ``tests/data/parity/<case>.npz``.

Both reference repositories compile CUDA extensions on import only where CUDA is used; on a
CPU-only machine rosinality's ``op`` package still calls ``torch.utils.cpp_extension.load`` at
import, so this script replaces that function with a stub *before* importing it (its CPU code
paths never call the extension). NVlabs' ``dnnlib`` needs ``requests``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from engine.synthesis.networks import Generator, GeneratorConfig, seed_to_z  # noqa: E402
from formats import (  # noqa: E402
    nvlabs_init_kwargs,
    random_generator,
    rosinality_kwargs,
    write_nvlabs_pkl,
    write_rosinality_pt,
)

FIXTURE_DIR = HERE / "data" / "parity"
FIXTURE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Cases (shared with tests/engine/synthesis/test_parity.py)


def scale_extreme(G: Generator) -> None:
    """Blow up activations so that ``conv_clamp`` (±256) saturates in the convolutions and the
    toRGB layers: a const 300x larger and strong noise at 8 and 16 px. Images reach ±700."""
    sd = G.state_dict()
    sd["synthesis.b4.const"].mul_(300.0)
    for res in (8, 16):
        sd[f"synthesis.b{res}.conv0.noise_strength"].fill_(400.0)
        sd[f"synthesis.b{res}.conv1.noise_strength"].fill_(-300.0)


def scale_saturated(G: Generator) -> None:
    """As :func:`scale_extreme`, but toRGB weights 1000x smaller: the convolutions saturate at
    ±256 while the image stays O(1), so parity is checked at the usual absolute tolerance."""
    scale_extreme(G)
    for name, t in G.state_dict().items():
        if name.endswith("torgb.weight"):
            t.mul_(1e-3)


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "nvlabs" | "rosinality"
    config: GeneratorConfig
    weight_seed: int
    seeds: tuple[int, ...]
    # (truncation_psi, truncation_cutoff or None)
    truncations: tuple[tuple[float, Optional[int]], ...] = ((1.0, None), (0.7, None))
    modify: Optional[Callable[[Generator], None]] = field(default=None, compare=False)

    def generator(self) -> Generator:
        """The case's generator, exactly as the fixture was made from it."""
        G = random_generator(self.config, self.weight_seed)
        if self.modify is not None:
            with torch.no_grad():
                self.modify(G)
        return G

    def write(self, G: Generator, directory: Path) -> Path:
        if self.source == "nvlabs":
            return write_nvlabs_pkl(G, Path(directory) / f"{self.name}.pkl")
        return write_rosinality_pt(G, Path(directory) / f"{self.name}.pt")

    @property
    def fixture_path(self) -> Path:
        return FIXTURE_DIR / f"{self.name}.npz"


CASES: tuple[Case, ...] = (
    Case(
        "nvlabs_32",
        "nvlabs",
        GeneratorConfig.nvlabs(z_dim=64, w_dim=64, img_resolution=32, channel_base=1024, channel_max=64,
                               mapping_layers=2, conv_clamp=None),
        weight_seed=101,
        seeds=(0, 1, 2),
        truncations=((1.0, None), (0.7, None), (0.7, 4)),
    ),
    Case(
        "nvlabs_32_clamp256",
        "nvlabs",
        GeneratorConfig.nvlabs(z_dim=96, w_dim=128, img_resolution=32, channel_base=2048, channel_max=128,
                               mapping_layers=4, conv_clamp=256),
        weight_seed=102,
        seeds=(0, 7),
    ),
    Case(
        "nvlabs_32_clamp256_extreme",
        "nvlabs",
        GeneratorConfig.nvlabs(z_dim=64, w_dim=64, img_resolution=32, channel_base=1024, channel_max=64,
                               mapping_layers=2, conv_clamp=256),
        weight_seed=103,
        seeds=(0, 1),
        modify=scale_extreme,
    ),
    Case(
        "nvlabs_32_clamp256_saturated",
        "nvlabs",
        GeneratorConfig.nvlabs(z_dim=64, w_dim=64, img_resolution=32, channel_base=1024, channel_max=64,
                               mapping_layers=2, conv_clamp=256),
        weight_seed=105,
        seeds=(0, 1),
        modify=scale_saturated,
    ),
    Case(
        "nvlabs_64_clamp256",
        "nvlabs",
        GeneratorConfig.nvlabs(z_dim=64, w_dim=64, img_resolution=64, channel_base=2048, channel_max=64,
                               mapping_layers=3, conv_clamp=256),
        weight_seed=104,
        seeds=(0, 1),
        truncations=((1.0, None), (0.7, None), (0.5, 2)),
    ),
    Case(
        "rosinality_16",
        "rosinality",
        GeneratorConfig.rosinality(size=16, style_dim=64, n_mlp=8, channel_multiplier=2),
        weight_seed=201,
        seeds=(0, 1, 2),
    ),
    Case(
        "rosinality_32",
        "rosinality",
        GeneratorConfig.rosinality(size=32, style_dim=32, n_mlp=2, channel_multiplier=1),
        weight_seed=202,
        seeds=(0, 5),
    ),
    Case(
        "rosinality_64",
        "rosinality",
        GeneratorConfig.rosinality(size=64, style_dim=64, n_mlp=4, channel_multiplier=1),
        weight_seed=203,
        seeds=(3,),
    ),
)


def state_sha256(G: Generator) -> str:
    """SHA-256 over the state dict: sorted names, dtypes, shapes and float32 little-endian bytes."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        a = np.ascontiguousarray(t.detach().cpu().float().numpy().astype("<f4"))
        h.update(f"{name}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def z_batch(seeds, z_dim: int) -> torch.Tensor:
    """float32 z for the seeds, stacked: [len(seeds), z_dim]."""
    return torch.from_numpy(np.concatenate([seed_to_z(s, z_dim) for s in seeds])).float()


def load_fixture(case: Case) -> dict:
    with np.load(case.fixture_path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    d["config"] = json.loads(str(d["config_json"]))
    d["cutoff"] = [None if c < 0 else int(c) for c in d["truncation_cutoff"]]
    return d


# ---------------------------------------------------------------------------------------------
# References (imported from the user's checkouts)


def _git_head(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _import_from(repo: Path, module: str, *, stub_cpp_extension: bool = False) -> types.ModuleType:
    repo = repo.resolve()
    if not repo.is_dir():
        raise SystemExit(f"{repo}: not a directory")
    sys.path.insert(0, str(repo))
    saved_load = None
    try:
        if stub_cpp_extension:
            import torch.utils.cpp_extension as cpp

            saved_load = cpp.load
            cpp.load = lambda name, *a, **k: types.SimpleNamespace(name=name)  # CPU paths never call it
        return __import__(module, fromlist=["_"])
    finally:
        if saved_load is not None:
            cpp.load = saved_load


class NVlabsReference:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self.networks = _import_from(self.repo, "training.networks")
        self.commit = _git_head(self.repo)

    def build(self, case: Case, G: Generator, path: Path) -> torch.nn.Module:
        ref = self.networks.Generator(**nvlabs_init_kwargs(case.config)).eval().requires_grad_(False)
        missing, unexpected = ref.load_state_dict(G.state_dict(), strict=False)
        if unexpected or not all(k.endswith("resample_filter") for k in missing):
            raise RuntimeError(f"{case.name}: NVlabs state mismatch: missing {missing}, unexpected {unexpected}")
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        f = torch.outer(f, f) / 64
        for k in missing:
            if not torch.equal(ref.state_dict()[k], f):
                raise RuntimeError(f"{case.name}: NVlabs {k} is not the [1,3,3,1] filter")
        return ref

    @torch.no_grad()
    def render(self, ref, case: Case, seed: int, psi: float, cutoff: Optional[int]) -> np.ndarray:
        z = z_batch([seed], case.config.z_dim)
        img = ref(z, None, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const", force_fp32=True)
        return img.float().numpy()[0]


class RosinalityReference:
    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self.model = _import_from(self.repo, "model", stub_cpp_extension=True)
        self.commit = _git_head(self.repo)

    def build(self, case: Case, G: Generator, path: Path) -> torch.nn.Module:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ref = self.model.Generator(**rosinality_kwargs(case.config)).eval().requires_grad_(False)
        ref.load_state_dict(ckpt["g_ema"], strict=True)
        ref.latent_avg_from_file = ckpt["latent_avg"].float()
        return ref

    @torch.no_grad()
    def render(self, ref, case: Case, seed: int, psi: float, cutoff: Optional[int]) -> np.ndarray:
        if cutoff is not None:
            raise ValueError("rosinality truncates every layer; no cutoff")
        z = z_batch([seed], case.config.z_dim)
        img, _ = ref([z], truncation=psi, truncation_latent=ref.latent_avg_from_file[None], randomize_noise=False)
        return img.float().numpy()[0]


# ---------------------------------------------------------------------------------------------


def make_fixture(case: Case, reference, workdir: Path) -> Path:
    G = case.generator()
    path = case.write(G, workdir)
    ref = reference.build(case, G, path)
    images, seeds, psis, cutoffs = [], [], [], []
    for psi, cutoff in case.truncations:
        for seed in case.seeds:
            images.append(reference.render(ref, case, seed, psi, cutoff))
            seeds.append(seed)
            psis.append(psi)
            cutoffs.append(-1 if cutoff is None else cutoff)
    images = np.stack(images).astype(np.float32)
    case.fixture_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        case.fixture_path,
        images=images,
        seeds=np.asarray(seeds, dtype=np.int64),
        truncation_psi=np.asarray(psis, dtype=np.float64),
        truncation_cutoff=np.asarray(cutoffs, dtype=np.int64),
        config_json=np.asarray(json.dumps(case.config.to_dict(), sort_keys=True)),
        state_sha256=np.asarray(state_sha256(G)),
        weight_seed=np.asarray(case.weight_seed),
        source=np.asarray(case.source),
        reference_commit=np.asarray(reference.commit),
        torch_version=np.asarray(torch.__version__),
        fixture_version=np.asarray(FIXTURE_VERSION),
    )
    lo, hi = float(images.min()), float(images.max())
    print(f"{case.fixture_path.relative_to(HERE.parent)}: {len(images)} images "
          f"{tuple(images.shape[1:])}, range [{lo:.3g}, {hi:.3g}], "
          f"{case.fixture_path.stat().st_size / 1024:.0f} KiB", flush=True)
    return case.fixture_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nvlabs-repo", type=Path, required=True, help="checkout of NVlabs/stylegan2-ada-pytorch")
    p.add_argument("--rosinality-repo", type=Path, required=True, help="checkout of rosinality/stylegan2-pytorch")
    p.add_argument("--cases", nargs="*", default=None, help="only these case names")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    refs = {"nvlabs": NVlabsReference(args.nvlabs_repo), "rosinality": RosinalityReference(args.rosinality_repo)}
    selected = [c for c in CASES if args.cases is None or c.name in args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        for case in selected:
            make_fixture(case, refs[case.source], Path(tmp))


if __name__ == "__main__":
    main()
