"""AvatarEngine: what the sessions of one generator share (generator, directions, backend, lock).

The generator is loaded once; its named motion directions are the shipped ones (the demo), the
given ones, or found by :mod:`engine.latent.defaults` (cached, discovered, placeholder, said in
one line); the synthesis backend is plain ``G.synthesis`` or one of
:mod:`engine.synthesis.backends`; the default driver is the shipped audio LSTM wherever the
directions are real.
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from engine.batching import BatchingSynthesizer
from engine.frames import images_to_uint8
from engine.latent.defaults import resolve_directions
from engine.latent.direction_set import DirectionSet
from engine.inversion.identity_file import is_identity_file, read_identity
from engine.identity_weights import IdentityWeights
from engine.latent.identity import load_ws_array, truncate, w_from_seed
from engine.latent.pca import global_basis
from engine.motion.base import ROLES
from engine.motion.lstm_file import load_motion_model
from engine.synthesis.backends import create_backend
from engine.synthesis.checkpoints import DEMO_ASSET, load_generator
from engine.synthesis.fingerprint import generator_hash
from engine.synthesis.networks import NOISE_MODES

__all__ = ["AvatarEngine", "default_directions", "is_demo_checkpoint", "DEFAULT_BASIS_SAMPLES", "ASSETS", "DEMO_DIRECTIONS", "DEMO_MOTION"]

#: w samples of the placeholder global basis (enough for stable top-8 components, ~0.4 s on a CPU).
DEFAULT_BASIS_SAMPLES = 50_000
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: shipped with the demo generator (engine/assets): its named motion directions and its trained
#: audio LSTM (python -m engine.demo_world.assets / engine.train_motion; see the README)
ASSETS = DEMO_ASSET.parent
DEMO_DIRECTIONS = ASSETS / "demo_directions.json"
DEMO_MOTION = ASSETS / "demo_motion.safetensors"


def is_demo_checkpoint(checkpoint_hash: str) -> bool:
    """Whether a generator with this hash is the shipped demo generator (its directions ship too)."""
    return DEMO_DIRECTIONS.is_file() and json.loads(DEMO_DIRECTIONS.read_text()).get("checkpoint_hash") == checkpoint_hash


def default_directions(G, *, cache_dir=None, n_samples: int = DEFAULT_BASIS_SAMPLES) -> DirectionSet:
    """A placeholder DirectionSet for any generator: the 8 motion roles of
    :data:`engine.motion.base.ROLES` on the top 8 components of the global PCA basis
    (``engine.latent.pca.global_basis``, ``n_samples`` w, cached under ``cache_dir`` /
    ``$STYLECAST_CACHE/latent``).

    Role i gets component i (``mouth_open`` = pc0, ``jaw`` = pc1, ``blink`` = pc2,
    ``head_yaw/pitch/roll`` = pc3-5, ``gaze_x/y`` = pc6-7). Head roles act on the first third of
    the layers (coarse: pose), the others on the middle third (expression). PCA components are
    not semantic, so this only gives a moving face; name real directions with
    ``python -m engine.basis name`` and pass that file as ``directions``.
    """
    num_ws = int(G.num_ws)
    third = max(1, num_ws // 3)
    head = (0, third - 1)
    middle = (third, min(num_ws - 1, 2 * third - 1))
    basis = global_basis(G, n_samples=int(n_samples), k=len(ROLES), seed=0, cache_dir=cache_dir, progress=False)
    ds = DirectionSet()
    for i, role in enumerate(ROLES):
        layers = head if role.startswith("head_") else middle
        ds.add_from_basis(basis, i, role, layers=layers, source=f"default_directions: global PCA pc{i} (placeholder)")
    return ds


class AvatarEngine:
    """What sessions share: the generator (loaded once), device and dtype, the DirectionSet, and a
    lock around synthesis. Thread-safe: several sessions (threads) may call :meth:`synthesize`.

    Args:
        generator: ``"demo"``, a preset name, a checkpoint path (see
            :func:`engine.synthesis.checkpoints.load_generator`), or a loaded ``Generator`` (used
            as is: moved to ``device``, and its synthesis network cast to ``dtype`` in place).
        device: torch device for synthesis ("cpu", "cuda", "cuda:0", ...).
        dtype: synthesis compute dtype, "float32" (default), "float16" or "bfloat16" (the
            mapping network stays float32).
        directions: a DirectionSet, a path to a direction-set JSON, or None: the demo generator's
            shipped named directions (``engine/assets/demo_directions.json``) for ``"demo"``; for
            any other generator, in order, the set discovered earlier for this checkpoint (cached
            by hash), discovery now with the face measure when the ``faces`` extra is installed
            (``discover=True``; minutes on a CPU, with a progress bar), else
            :func:`default_directions` (placeholder PCA roles) with a loud one-line warning.
            Which one is said through ``log`` and kept in :attr:`directions_kind`.
        resolution: side of the square output image; None keeps the generator's. Resizing
            (antialiased bilinear) happens once, at the sink (:meth:`to_uint8` / :meth:`resize`).
        truncation_psi: default truncation for identities given as seeds.
        noise_mode: "const" (default: no flicker), "random" or "none".
        synthesize: optional ``callable(ws [B, num_ws, w_dim]) -> img [B, 3, H, W]`` float in
            [-1, 1] that replaces ``G.synthesis`` (other backends, overload tests).
        backend: ``"auto" | "torch" | "onnx" | "trt"`` (``engine.synthesis.backends``) instead
            of the plain ``G.synthesis`` call; ``auto`` picks the fastest available and says
            which (:attr:`backend_info`).
        batching: route every session's synthesis through one
            :class:`engine.batching.BatchingSynthesizer`: concurrent sessions (threads) share
            one backend call per round (``max_batch`` frames, ``batch_window_ms`` gather window).
        expect_sha256: refuse a checkpoint file (or cached preset) whose sha256 is not this.
    """

    def __init__(self, generator="demo", *, device="cpu", dtype="float32", directions=None,
                 resolution: Optional[int] = None, truncation_psi: float = 0.7, noise_mode: str = "const",
                 synthesize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 backend: Optional[str] = None, batching: bool = False, max_batch: int = 16,
                 batch_window_ms: float = 3.0, log: Optional[Callable[[str], None]] = None,
                 discover: bool = True, expect_sha256: Optional[str] = None):
        self.device = torch.device(device)
        if isinstance(dtype, torch.dtype):
            self.dtype = dtype
        elif dtype in _DTYPES:
            self.dtype = _DTYPES[dtype]
        else:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        self.noise_mode = noise_mode
        psi = float(truncation_psi)
        if not math.isfinite(psi):
            raise ValueError(f"truncation_psi must be finite, got {truncation_psi!r}")
        self.truncation_psi = psi
        if synthesize is not None and not callable(synthesize):
            raise ValueError("synthesize must be a callable ws -> img")
        self._synthesize_fn = synthesize

        if isinstance(generator, torch.nn.Module):
            G = generator.to(self.device).eval().requires_grad_(False)
        else:
            G = load_generator(generator, device=self.device, expect_sha256=expect_sha256)
        if synthesize is not None and backend is not None:
            raise ValueError("give synthesize= or backend=, not both")
        self.backend_info: dict = {"backend": "torch", "device": str(self.device), "dtype": str(self.dtype)}
        if backend is not None:
            dt = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]
            self._backend_args = dict(name=backend, device=self.device, dtype=None if backend == "auto" else dt,
                                      max_batch=max_batch, log=log)
            chosen = create_backend(G=G, **self._backend_args)
            synthesize = chosen
            self._synthesize_fn = chosen
            self.backend_info = chosen.describe()
        elif self.dtype != torch.float32 and synthesize is None:
            G.synthesis.to(self.dtype)
        self.G = G
        #: the checkpoint's hash as loaded: identity files and directions are checked against it
        #: (an identity's noise maps or tuned weights change the generator, not the checkpoint)
        self.checkpoint_hash = generator_hash(G)
        self.identity_weights = IdentityWeights(G, renderer=lambda: self._synthesize_fn, rebuild=self._rebuild_backend,
                                                log=log)
        self.num_ws, self.w_dim, self.z_dim = int(G.num_ws), int(G.w_dim), int(G.z_dim)
        self.img_resolution = int(G.img_resolution)
        if resolution is None:
            self.resolution = self.img_resolution
        else:
            if isinstance(resolution, bool) or int(resolution) != resolution or not 8 <= int(resolution) <= 4096:
                raise ValueError(f"resolution must be an integer in [8, 4096], got {resolution!r}")
            self.resolution = int(resolution)

        is_demo = isinstance(generator, str) and generator == "demo" and not Path("demo").exists()
        if directions is None and not is_demo and DEMO_DIRECTIONS.is_file():
            # the shipped demo generator given as a path or a loaded module is still the demo
            is_demo = is_demo_checkpoint(self.checkpoint_hash)
        if directions is None and is_demo and DEMO_DIRECTIONS.is_file():
            directions = DEMO_DIRECTIONS
        self._log = log
        self._default_model_fps: Optional[float] = None     # the default model's fps (0: any), set with default_driver
        self._fps_warned = False
        #: where the directions came from: "given", "shipped", "cached", "discovered" or "placeholder"
        self.directions_kind = "shipped" if directions == DEMO_DIRECTIONS else "given"
        if directions is None:
            directions, self.directions_kind = resolve_directions(
                G, default_directions, checkpoint_hash=self.checkpoint_hash, log=log, discover_now=discover)
        elif isinstance(directions, (str, os.PathLike)):
            directions = DirectionSet.load(directions, num_ws=self.num_ws, w_dim=self.w_dim,
                                           checkpoint_hash=self.checkpoint_hash)
        elif isinstance(directions, DirectionSet):
            directions.check(num_ws=self.num_ws, w_dim=self.w_dim, checkpoint_hash=self.checkpoint_hash)
        else:
            raise ValueError(f"directions must be a DirectionSet, a path or None, got {type(directions).__name__}")
        if len(directions) == 0:
            raise ValueError("the direction set is empty")
        self.directions = directions
        #: the driver a session gets by default ("default"): the shipped audio LSTM (audio only, so
        #: it drives the mouth_open of any generator) over the idle driver, where the directions
        #: are real (shipped, given, discovered) and have its names; idle on placeholder directions
        self.default_driver = "idle"
        if self.directions_kind == "given" and all("(placeholder)" in (d.source or "") for d in directions):
            self.directions_kind = "placeholder"           # default_directions(G) passed in explicitly
        if self.directions_kind != "placeholder" and DEMO_MOTION.is_file():
            model = load_motion_model(DEMO_MOTION)
            if not model.config.w_dim or (is_demo and model.config.w_dim == self.w_dim):
                if all(n in directions for n in (model.config.names or ())):
                    self.default_driver = "lstm+idle:" + os.fspath(DEMO_MOTION)
                    self._default_model_fps = 0.0 if model.config.step_hz else float(model.config.fps)
        self.lock = threading.Lock()
        #: held around every synthesis call and while an identity's weights go in, so no frame is
        #: drawn with half of them (the batcher's thread does not take :attr:`lock`)
        self._weights_lock = threading.Lock()
        self.batcher = None
        if batching:
            self.batcher = BatchingSynthesizer(self._synthesize_batch, max_batch=max_batch, window_ms=batch_window_ms)

    def attach(self) -> None:
        """A session starts using this engine (the batcher waits for up to this many per round)."""
        if self.batcher is not None:
            self.batcher.register()

    def detach(self) -> None:
        if self.batcher is not None:
            self.batcher.unregister()

    def _synthesize_batch(self, ws: torch.Tensor) -> torch.Tensor:
        with self._weights_lock, torch.inference_mode():
            if self._synthesize_fn is not None:
                return self._synthesize_fn(ws)
            return self.G.synthesis(ws, noise_mode=self.noise_mode)

    def close(self) -> None:
        """Stop the batcher thread (if any)."""
        if self.batcher is not None:
            self.batcher.close()

    def synthesize(self, ws) -> torch.Tensor:
        """ws [B, num_ws, w_dim] → img [B, 3, H, W] float32 in about [-1, 1] (generator
        resolution), on the engine's device. Serialised by :attr:`lock`."""
        ws = torch.as_tensor(ws).to(self.device, torch.float32)
        if ws.ndim == 2:
            ws = ws[None]
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if self.batcher is not None:
            img = self.batcher(ws)
        else:
            with self.lock:
                img = self._synthesize_batch(ws)
        img = torch.as_tensor(img)
        if img.ndim != 4 or img.shape[0] != ws.shape[0] or img.shape[1] != 3:
            raise ValueError(f"synthesis returned shape {list(img.shape)}, expected [{ws.shape[0]}, 3, H, W]")
        return img.float()

    def resize(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, 3, H, W] float → [B, 3, R, R] at the output resolution (no-op when equal)."""
        r = self.resolution
        if img.shape[-2:] == (r, r):
            return img
        down = img.shape[-1] > r
        with torch.inference_mode():
            return torch.nn.functional.interpolate(img.float(), size=(r, r), mode="bilinear",
                                                   align_corners=False, antialias=down)

    def to_uint8(self, img: torch.Tensor) -> np.ndarray:
        """img [B, 3, H, W] float in [-1, 1] → [B, R, R, 3] uint8 RGB at the output resolution
        (the one place images are quantised)."""
        return images_to_uint8(self.resize(img))

    def default_driver_for(self, fps: float) -> str:
        """:attr:`default_driver`, or ``"idle"`` when it is a frame-stepped model trained at another
        frame rate (said once through ``log``). A model with its own clock (``step_hz``) runs at
        any frame rate."""
        spec = self.default_driver
        if spec.startswith(("lstm:", "lstm+idle:")):
            if self._default_model_fps is None:
                cfg = load_motion_model(spec.partition(":")[2]).config
                self._default_model_fps = 0.0 if cfg.step_hz else float(cfg.fps)
            if self._default_model_fps and abs(self._default_model_fps - float(fps)) > 1e-9:
                if self._log is not None and not self._fps_warned:
                    self._fps_warned = True
                    self._log(f"the demo motion model runs at {self._default_model_fps:g} fps; sessions at "
                              f"{float(fps):g} fps use the idle driver")
                return "idle"
        return spec

    def _rebuild_backend(self) -> None:
        """A baked backend (ONNX Runtime, TensorRT) made again from :attr:`G` as it is now."""
        chosen = self.backend_info.get("backend")            # what "auto" picked, not a new pick
        self._synthesize_fn = create_backend(G=self.G, **{**self._backend_args, "name": chosen, "log": None})
        self.backend_info = self._synthesize_fn.describe()

    def _identity_file(self, path) -> np.ndarray:
        """ws [1, num_ws, w_dim] of an identity .npz made for this checkpoint (refused otherwise);
        its projected noise maps and tuned weights go into this engine's generator, said once:
        they are per engine, so every session of the engine renders with them
        (:mod:`engine.identity_weights`)."""
        ident = read_identity(path, generator_hash=self.checkpoint_hash, num_ws=self.num_ws, w_dim=self.w_dim)
        with self._weights_lock:
            self.identity_weights.use(path, ident)
        return ident.ws

    def identity_ws(self, identity, truncation_psi: Optional[float] = None) -> torch.Tensor:
        """ws [num_ws, w_dim] float32 on the device for an identity: an int seed (NVlabs z, mapped
        with ``truncation_psi``, default the engine's), w [w_dim], ws [num_ws, w_dim] or
        [1, num_ws, w_dim] (array or tensor), or a path to a .npy holding one of those. Arrays are
        truncated only when ``truncation_psi`` is given. ValueError / FileNotFoundError."""
        if truncation_psi is not None:
            truncation_psi = float(truncation_psi)
            if not math.isfinite(truncation_psi):
                raise ValueError(f"truncation_psi must be finite, got {truncation_psi!r}")
        if isinstance(identity, bool):
            raise ValueError("identity must be a seed, a latent array or a .npy path, not a bool")
        if isinstance(identity, (int, np.integer)):
            seed = int(identity)
            if not 0 <= seed < 2**32:
                raise ValueError(f"seed must be in 0 .. 2**32-1, got {seed}")
            psi = self.truncation_psi if truncation_psi is None else truncation_psi
            return w_from_seed(self.G, seed, truncation_psi=psi)[0].to(self.device, torch.float32)
        if is_identity_file(identity):          # an inverted photo (engine.invert)
            ws = torch.from_numpy(self._identity_file(identity))
        elif isinstance(identity, (str, os.PathLike)):
            arr = load_ws_array(Path(identity), self.num_ws, self.w_dim)
            if arr.shape[0] != 1:
                raise ValueError(f"{identity}: holds {arr.shape[0]} latents, an identity is one")
            ws = torch.from_numpy(arr)
        elif isinstance(identity, (np.ndarray, torch.Tensor)):
            a = identity.detach().cpu() if torch.is_tensor(identity) else torch.from_numpy(np.asarray(identity))
            if not (a.is_floating_point()):
                raise ValueError(f"identity latents must be floating point, got {a.dtype}")
            a = a.to(torch.float32)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            if a.ndim == 2 and a.shape[0] == 1 and a.shape[1] == self.w_dim:
                a = a[0]
            if a.shape == (self.w_dim,):
                a = a.expand(self.num_ws, -1)
            if a.shape != (self.num_ws, self.w_dim):
                raise ValueError(f"identity latents must be w [{self.w_dim}] or ws [{self.num_ws}, {self.w_dim}], "
                                 f"got {list(identity.shape)}")
            if not bool(torch.isfinite(a).all()):
                raise ValueError("identity latents contain NaN or infinity")
            ws = a[None].clone()
        else:
            raise ValueError(f"identity must be an int seed, a latent array/tensor or a .npy path, "
                             f"got {type(identity).__name__}")
        if truncation_psi is not None:
            ws = truncate(self.G, ws, truncation_psi)
        return ws[0].to(self.device, torch.float32)
