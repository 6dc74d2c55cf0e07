"""AvatarSession: push audio, pull frames — one clock, per-stage timings.

The data flow of DESIGN.md as plain function calls::

    push_audio(pcm, rate) ─► AudioInput (→ 16 kHz mono) ─► FeatureStream ─► [ready frames]
    next_frame() ─► MotionDriver.step(features) ─► LatentPath(x) = ws ─► engine.synthesize(ws)
                 ─► engine.to_uint8(img) ─► Frame

**One clock.** Time inside a session is a count of 16 kHz samples. Video frame k covers the audio
``[S(k), S(k+1))`` with ``S(k) = round(k·16000/fps)`` (halves rounded up, as FeatureStream does);
``Frame.pts = S(k)``. Frame k is *ready* once the feature stream has audio up to
``S(k+1) + lookahead`` (the FeatureStream rule), so a frame never shows audio that has not
arrived. :attr:`AvatarSession.clock` counts the 16 kHz samples that reached the feature stream
(pushed audio that left the resampler, plus silence); audio still inside the resampler is
:attr:`engine.audio.input.AudioInput.pending_samples` further on.

**Latency.** :attr:`AvatarSession.latency_ms` = the resampler's worst-case lag for the current
input rate (``AudioInput.latency_ms``, 0 at 16 kHz) + ``FeatureStream.latency_ms`` (the
lookahead): how long after the end of frame k's audio, at the earliest, frame k can be built.

**Audio out, offset 0.** With ``audio_out=True`` the session keeps the pushed audio as int16 mono
at ``audio_out_rate`` (copied as is when the input already has that rate; otherwise resampled
with libsoxr) on the same timeline, and each Frame carries exactly the samples
``[O(k), O(k+1))``, ``O(k) = round(k·audio_out_rate/fps)``: the audio that drove frame k, zeros
where silence was filled. Playing ``Frame.audio`` back to back while showing the frames at
``k/fps`` is therefore in sync by construction (audio/video offset 0, up to one sample of
rounding at a silence fill). When frames were skipped (``latest=True``), a Frame's audio
starts where the previous Frame's audio ended, so the concatenation of ``Frame.audio`` over all
Frames is always the pushed signal (a 48 kHz int16 mono input comes back bit for bit).

**Silence fill.** ``next_frame(fill_silence=True)`` is for a stream whose audio may be late or
absent (no mic yet): when frame k is not ready, audio held inside the resampler is flushed out
first (it was pushed, so it is not "missing"), then exactly the missing samples are added as
zeros, so idle motion keeps running. Audio pushed afterwards continues the timeline after the
zeros.

**Threads.** ``push_audio``, ``interrupt``, ``set_identity`` and ``set_driver`` may be called
from one thread (an event loop) while another thread calls ``next_frame``: session state is
guarded by a lock that is *not* held during synthesis, and synthesis itself is serialised per
engine. Calls to ``next_frame`` are serialised too.

**Bounded.** At most ``max_pending_s`` seconds of ready frames wait for ``next_frame``; beyond
that the oldest are stepped through the motion driver (motion stays continuous), dropped, and
their audio discarded (counted in the next Frame's ``dropped``).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from engine.audio.features import FeatureStream
from engine.audio.input import SAMPLE_RATE, AudioInput
from engine.latent.directions import DirectionSet
from engine.latent.path import LatentPath
from engine.motion.base import ROLES, MotionDriver
from engine.synthesis.checkpoints import DEMO_ASSET

__all__ = ["AvatarEngine", "AvatarSession", "Frame", "default_directions", "STAGES",
           "DEFAULT_LOOKAHEAD_MS", "DEFAULT_BASIS_SAMPLES"]

#: Keys of ``Frame.timings`` (milliseconds).
STAGES = ("features", "motion", "latent", "synthesis", "convert", "total")
DEFAULT_LOOKAHEAD_MS = 40.0
#: w samples of the placeholder global basis (enough for stable top-8 components, ~0.4 s on a CPU).
DEFAULT_BASIS_SAMPLES = 50_000
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_STATS_WINDOW = 250


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------------------------------------
# shared engine

#: shipped with the demo generator (engine/assets): its named motion directions and its trained
#: audio LSTM (python -m engine.demo_world.assets / engine.train_motion; see the README)
ASSETS = DEMO_ASSET.parent
DEMO_DIRECTIONS = ASSETS / "demo_directions.json"
DEMO_MOTION = ASSETS / "demo_motion.safetensors"


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
    from engine.latent.pca import global_basis

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
    """

    def __init__(self, generator="demo", *, device="cpu", dtype="float32", directions=None,
                 resolution: Optional[int] = None, truncation_psi: float = 0.7, noise_mode: str = "const",
                 synthesize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 backend: Optional[str] = None, batching: bool = False, max_batch: int = 16,
                 batch_window_ms: float = 3.0, log: Optional[Callable[[str], None]] = None,
                 discover: bool = True):
        from engine.latent.basis import generator_hash
        from engine.synthesis.networks import NOISE_MODES

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
            from engine.synthesis.checkpoints import load_generator
            G = load_generator(generator, device=self.device)
        if synthesize is not None and backend is not None:
            raise ValueError("give synthesize= or backend=, not both")
        self.backend_info: dict = {"backend": "torch", "device": str(self.device), "dtype": str(self.dtype)}
        if backend is not None:
            from engine.synthesis.backends import create_backend
            dt = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]
            chosen = create_backend(backend, G, device=self.device, dtype=None if backend == "auto" else dt,
                                    max_batch=max_batch, log=log)
            synthesize = chosen
            self._synthesize_fn = chosen
            self.backend_info = chosen.describe()
        elif self.dtype != torch.float32 and synthesize is None:
            G.synthesis.to(self.dtype)
        self.G = G
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
            is_demo = generator_hash(G) == json.loads(DEMO_DIRECTIONS.read_text()).get("checkpoint_hash")
        if directions is None and is_demo and DEMO_DIRECTIONS.is_file():
            directions = DEMO_DIRECTIONS
        self._log = log
        self._default_model_fps: Optional[float] = None     # the default model's fps, set with default_driver
        self._fps_warned = False
        #: where the directions came from: "given", "shipped", "cached", "discovered" or "placeholder"
        self.directions_kind = "shipped" if directions == DEMO_DIRECTIONS else "given"
        if directions is None:
            from engine.latent.defaults import resolve_directions
            directions, self.directions_kind = resolve_directions(
                G, default_directions, checkpoint_hash=generator_hash(G), log=log, discover_now=discover)
        elif isinstance(directions, (str, os.PathLike)):
            directions = DirectionSet.load(directions, num_ws=self.num_ws, w_dim=self.w_dim,
                                           checkpoint_hash=generator_hash(G))
        elif isinstance(directions, DirectionSet):
            directions.check(num_ws=self.num_ws, w_dim=self.w_dim, checkpoint_hash=generator_hash(G))
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
            from engine.motion.lstm import load_motion_model
            model = load_motion_model(DEMO_MOTION)
            if not model.config.w_dim or (is_demo and model.config.w_dim == self.w_dim):
                if all(n in directions for n in (model.config.names or ())):
                    self.default_driver = "lstm+idle:" + os.fspath(DEMO_MOTION)
                    self._default_model_fps = float(model.config.fps)
        self.lock = threading.Lock()
        self.batcher = None
        if batching:
            from engine.batching import BatchingSynthesizer
            self.batcher = BatchingSynthesizer(self._synthesize_batch, max_batch=max_batch, window_ms=batch_window_ms)

    def attach(self) -> None:
        """A session starts using this engine (the batcher waits for up to this many per round)."""
        if self.batcher is not None:
            self.batcher.register()

    def detach(self) -> None:
        if self.batcher is not None:
            self.batcher.unregister()

    def _synthesize_batch(self, ws: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
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
        from engine.cli_util import images_to_uint8

        return images_to_uint8(self.resize(img))

    def default_driver_for(self, fps: float) -> str:
        """:attr:`default_driver`, or ``"idle"`` when it is a model trained at another frame rate
        (the demo LSTM runs at 25 fps; a session at 30 fps then gets the idle driver, said once
        through ``log``)."""
        spec = self.default_driver
        if spec.startswith(("lstm:", "lstm+idle:")):
            from engine.motion.lstm import load_motion_model
            if self._default_model_fps is None:
                self._default_model_fps = float(load_motion_model(spec.partition(":")[2]).config.fps)
            if abs(self._default_model_fps - float(fps)) > 1e-9:
                if self._log is not None and not self._fps_warned:
                    self._fps_warned = True
                    self._log(f"the demo motion model runs at {self._default_model_fps:g} fps; sessions at "
                              f"{float(fps):g} fps use the idle driver")
                return "idle"
        return spec

    def identity_ws(self, identity, truncation_psi: Optional[float] = None) -> torch.Tensor:
        """ws [num_ws, w_dim] float32 on the device for an identity: an int seed (NVlabs z, mapped
        with ``truncation_psi``, default the engine's), w [w_dim], ws [num_ws, w_dim] or
        [1, num_ws, w_dim] (array or tensor), or a path to a .npy holding one of those. Arrays are
        truncated only when ``truncation_psi`` is given. ValueError / FileNotFoundError."""
        from engine.latent.identity import load_ws_array, truncate, w_from_seed

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
        if isinstance(identity, (str, os.PathLike)):
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


# ---------------------------------------------------------------------------------------------
# frames

@dataclass
class Frame:
    """One video frame and what made it. Times are 16 kHz sample counts unless named ``_s``/``_ms``."""
    index: int                      # video frame k (0, 1, 2, ...)
    pts: int                        # round(k · 16000 / fps): start of frame k's audio, 16 kHz samples
    time_s: float                   # pts / 16000
    image: Union[np.ndarray, torch.Tensor]  # [H, W, 3] uint8 RGB, or [3, H, W] float tensor (output="tensor")
    x: np.ndarray                   # control vector x_t [k] float32 (stdev units) of frame k
    voiced: float                   # voiced fraction of frame k's audio (webrtcvad), 0..1
    rms: float                      # RMS of frame k's audio (full scale 1.0)
    audio: Optional[np.ndarray] = None      # int16 mono at audio_rate (audio_out=True), see module doc
    audio_rate: Optional[int] = None
    dropped: int = 0                # frames stepped (motion) but not synthesized since the previous Frame
    timings: dict = field(default_factory=dict)   # ms per stage, keys STAGES
    latency_ms: float = 0.0         # resampler lag + feature lookahead (AvatarSession.latency_ms)


# ---------------------------------------------------------------------------------------------
# session

def _pcm_dtype(pcm) -> str:
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        return "int16"
    dt = np.asarray(pcm).dtype if not hasattr(pcm, "dtype") else np.dtype(pcm.dtype)
    if dt == np.int16:
        return "int16"
    if dt in (np.float32, np.float64):
        return "float32"
    raise ValueError(f"unsupported sample format {dt} (int16, or float32 with full scale 1.0)")


class AvatarSession:
    """One avatar stream: push audio, pull frames (see the module docstring for the clock).

    Args:
        engine: the shared :class:`AvatarEngine` (None: a new demo engine).
        fps: video frames per second.
        identity: the face (see :meth:`set_identity`).
        driver: the motion (see :meth:`set_driver`).
        seed: seed of the motion driver (idle blinks/sway, LSTM motion noise).
        lookahead_ms: feature lookahead; None = the driver's (``driver.lookahead_ms``) or 40 ms.
        output: "uint8" (Frame.image [H, W, 3] uint8 RGB) or "tensor" ([3, H, W] float in
            [-1, 1] on the engine's device, at the output resolution).
        audio_out: keep the pushed audio and hand it out with the frames (``Frame.audio``).
        audio_out_rate: sample rate of ``Frame.audio`` (8000 .. 192000).
        max_pending_s: most seconds of ready frames kept for ``next_frame``.
    """

    def __init__(self, engine: Optional[AvatarEngine] = None, *, fps: float = 25.0, identity=0, driver="default",
                 seed: int = 0, lookahead_ms: Optional[float] = None, output: str = "uint8",
                 audio_out: bool = False, audio_out_rate: int = 48000, max_pending_s: float = 30.0):
        fps = float(fps)
        if not (math.isfinite(fps) and 0 < fps <= 240):
            raise ValueError(f"fps must be in (0, 240], got {fps!r}")
        if output not in ("uint8", "tensor"):
            raise ValueError(f"output must be 'uint8' or 'tensor', got {output!r}")
        if isinstance(audio_out_rate, bool) or int(audio_out_rate) != audio_out_rate \
                or not 8000 <= int(audio_out_rate) <= 192000:
            raise ValueError(f"audio_out_rate must be an integer in [8000, 192000] Hz, got {audio_out_rate!r}")
        if lookahead_ms is not None:
            lookahead_ms = float(lookahead_ms)
            if not (math.isfinite(lookahead_ms) and 0 <= lookahead_ms <= 1000):
                raise ValueError(f"lookahead_ms must be in [0, 1000], got {lookahead_ms!r}")
        max_pending_s = float(max_pending_s)
        if not (math.isfinite(max_pending_s) and max_pending_s > 0):
            raise ValueError(f"max_pending_s must be positive, got {max_pending_s!r}")
        self.engine = engine if engine is not None else AvatarEngine()
        self.fps = fps
        self.seed = int(seed)
        self.output = output
        self.audio_out = bool(audio_out)
        self.audio_out_rate = int(audio_out_rate)
        self.max_pending_frames = max(1, int(math.ceil(max_pending_s * fps)))
        self._lock = threading.RLock()          # session state
        self._pull_lock = threading.Lock()      # one next_frame at a time
        self._closed = False

        self._ai: Optional[AudioInput] = None   # current input stream
        self._ai_key = None                     # (rate, channels, dtype)
        self._queue: deque = deque()            # (k, FrameFeatures, features_ms) ready, not yet pulled
        self._next_k = 0                        # next frame to hand out (or step)
        self._feat_carry_ms = 0.0               # feature time not yet attributed to a frame
        self._overflow_dropped = 0
        # audio out: int16 mono at audio_out_rate, global sample _out_base .. _out_base + len(_out)
        self._out = np.zeros(0, dtype=np.int16)
        self._out_base = 0
        self._out_rs = None                     # soxr stream input rate -> audio_out_rate (or None)
        self._out_partial = np.zeros(0, dtype=np.float32)
        self._audio_from_k = 0                  # first frame whose audio was not handed out yet
        self._frames_out = 0
        self._dropped_total = 0
        self._timings: deque = deque(maxlen=_STATS_WINDOW)

        drv = self._make_driver(driver)
        need = self._feature_needs(drv)
        if lookahead_ms is None:
            lookahead_ms = need[0] if need[0] is not None else DEFAULT_LOOKAHEAD_MS
        elif need[0] is not None and abs(need[0] - lookahead_ms) > 1e-9:
            raise ValueError(f"the driver was trained with a {need[0]:g} ms lookahead, not {lookahead_ms:g} ms")
        self._fs = self._new_feature_stream(lookahead_ms, need[1])
        self._fs_frame0 = 0
        self._fs_sample0 = 0
        self._anchor = self.engine.identity_ws(identity)
        self._install_driver(drv)
        self.engine.attach()

    # -- properties --------------------------------------------------------------------------
    @property
    def clock(self) -> int:
        """16 kHz samples of audio that reached the feature stream (pushed + silence-filled)."""
        return self._fs_sample0 + self._fs.samples_received

    @property
    def driver(self) -> MotionDriver:
        return self._driver

    @property
    def lookahead_ms(self) -> float:
        return self._fs.lookahead_ms

    @property
    def latency_ms(self) -> float:
        """Resampler lag estimate of the current input (``AudioInput.latency_ms``; 0 before any
        audio and at 16 kHz) + ``FeatureStream.latency_ms`` (lookahead)."""
        ai_ms = float(getattr(self._ai, "latency_ms", 0.0)) if self._ai is not None else 0.0
        return ai_ms + self._fs.latency_ms

    @property
    def identity_ws(self) -> torch.Tensor:
        """The current anchor ws [num_ws, w_dim]."""
        return self._anchor.clone()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- frame time ----------------------------------------------------------------------------
    def frame_start(self, k: int) -> int:
        """S(k) = round(k · 16000 / fps), 16 kHz samples."""
        return _round_half_up(k * SAMPLE_RATE / self.fps)

    def _out_at(self, k: int) -> int:
        return _round_half_up(k * self.audio_out_rate / self.fps)

    @property
    def _out_total(self) -> int:
        return self._out_base + self._out.size

    # -- drivers -----------------------------------------------------------------------------
    def _make_driver(self, spec) -> MotionDriver:
        ds = self.engine.directions
        if isinstance(spec, MotionDriver):
            drv = spec
        elif isinstance(spec, str):
            if spec == "default":
                spec = self.engine.default_driver_for(self.fps)
            kind, _, arg = spec.partition(":")
            if kind == "idle" and not arg:
                from engine.motion.idle import IdleDriver
                drv = IdleDriver(ds, fps=self.fps, seed=self.seed)
            elif kind in ("lstm", "lstm+idle") and arg:
                from engine.motion.lstm import AudioLSTMDriver, load_motion_model
                model = load_motion_model(arg, device=self.engine.device)   # MotionModelError is a ValueError
                k = model.config.k
                names = model.config.names
                if names is not None:        # the directions it was trained on, by name
                    missing = [n for n in names if n not in ds]
                    if missing:
                        raise ValueError(f"{arg}: the model drives {', '.join(missing)}, which the direction set "
                                         f"does not have ({', '.join(ds.names)})")
                elif k > len(ds):
                    raise ValueError(f"{arg}: the model drives {k} directions, the direction set has {len(ds)}")
                else:
                    names = ds.names[:k]
                drv = AudioLSTMDriver(model, names, seed=self.seed, device=self.engine.device)
                if kind == "lstm+idle":       # the model's directions over the idle driver's blinks and sway
                    from engine.motion.idle import IdleDriver
                    from engine.motion.layered import LayeredDriver
                    drv = LayeredDriver(drv, IdleDriver(ds, fps=self.fps, seed=self.seed))
            elif kind == "trajectory" and arg:
                from engine.motion.trajectory import TrajectoryDriver
                drv = TrajectoryDriver.load(arg, names=ds, directions=ds, fps=self.fps, num_ws=self.engine.num_ws)
            else:
                raise ValueError(f"unknown driver {spec!r} (default, idle, lstm:PATH.safetensors, "
                                 "lstm+idle:PATH.safetensors, trajectory:PATH.npy "
                                 "or a MotionDriver)")
        else:
            raise ValueError(f"driver must be a string or a MotionDriver, got {type(spec).__name__}")
        missing = [n for n in drv.names if n not in ds]
        if missing:
            raise ValueError(f"the driver moves directions {missing} that the engine's direction set lacks "
                             f"(have: {', '.join(ds.names)})")
        drv_fps = float(getattr(drv, "fps", self.fps))
        if abs(drv_fps - self.fps) > 1e-6 * self.fps:
            raise ValueError(f"the driver runs at {drv_fps:g} fps, this session at {self.fps:g} fps")
        return drv

    @staticmethod
    def _feature_needs(drv) -> tuple[Optional[float], Optional[float]]:
        """(lookahead_ms, window_ms) the driver was trained with (None where it has no requirement)."""
        look = getattr(drv, "lookahead_ms", None)
        cfg = getattr(drv, "config", None)
        frames = getattr(cfg, "window_frames", None)
        window = None if frames is None else float(frames) * 10.0
        return (None if look is None else float(look)), window

    def _new_feature_stream(self, lookahead_ms: float, window_ms: Optional[float]) -> FeatureStream:
        if window_ms is None:
            return FeatureStream(fps=self.fps, lookahead_ms=lookahead_ms)
        return FeatureStream(fps=self.fps, lookahead_ms=lookahead_ms, window_ms=window_ms)

    def _install_driver(self, drv: MotionDriver) -> None:
        basis, masks = self.engine.directions.to_path(self.engine.num_ws, drv.names)
        path = LatentPath(basis, self.engine.num_ws, layer_masks=masks, device=self.engine.device)
        path.set_anchor(ws=self._anchor)
        drv.reset(self._anchor)
        self._driver, self._path = drv, path

    # -- audio in ------------------------------------------------------------------------------
    def push_audio(self, pcm, sample_rate: int, channels: int = 1) -> None:
        """Feed PCM: int16 (or bytes of int16) or float32/float64 (full scale 1.0), mono or
        ``channels`` interleaved / [n, channels], 8-48 kHz. A new rate, layout or sample format
        starts a new input stream (the old one is flushed first). ValueError on bad input, with
        the session unchanged."""
        if torch.is_tensor(pcm):
            pcm = pcm.detach().cpu().numpy()
        dtype = _pcm_dtype(pcm)
        with self._lock:
            self._check_open()
            key = (sample_rate, channels, dtype)
            t0 = time.perf_counter()
            new_ai = None
            if self._ai is None or key != self._ai_key:
                new_ai = AudioInput(sample_rate, channels, dtype)        # validates rate/channels
                y = new_ai.push(pcm)                                     # validates the samples
            else:
                y = self._ai.push(pcm)                                   # raises before any change
            mono = self._out_mono(pcm, channels, dtype, new_stream=new_ai is not None) if self.audio_out else None
            if new_ai is not None:
                if self._ai is not None:
                    self._flush_streams()
                self._ai, self._ai_key = new_ai, (new_ai.sample_rate, new_ai.channels, dtype)
                if self.audio_out:
                    self._out_partial = mono[1]
                    self._out_rs = self._new_out_resampler(new_ai.sample_rate)
            elif self.audio_out:
                self._out_partial = mono[1]
            if self.audio_out:
                self._append_out_input(mono[0])
            self._feed(y, t0)

    def push_silence(self, seconds: float) -> None:
        """Let the clock run on with ``seconds`` of zeros (e.g. no mic yet). Audio still inside
        the resampler is flushed out first, so the silence comes after everything pushed."""
        s = float(seconds)
        if not (math.isfinite(s) and 0 <= s <= 3600):
            raise ValueError(f"seconds must be in [0, 3600], got {seconds!r}")
        with self._lock:
            self._check_open()
            self._flush_streams()
            self._push_zeros16(_round_half_up(s * SAMPLE_RATE))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")

    def _out_mono(self, pcm, channels: int, dtype: str, *, new_stream: bool) -> tuple[np.ndarray, np.ndarray]:
        """(mono float32 frames, leftover partial interleaved samples) of a chunk AudioInput has
        accepted, downmixed exactly as AudioInput does."""
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            pcm = np.frombuffer(pcm, dtype=np.int16)
        a = np.asarray(pcm).reshape(-1)
        x = a.astype(np.float32) * np.float32(1.0 / 32768.0) if dtype == "int16" else a.astype(np.float32)
        channels = int(channels)
        if channels > 1:
            partial = np.zeros(0, np.float32) if new_stream else self._out_partial
            if partial.size:
                x = np.concatenate([partial, x])
            whole = x.size - x.size % channels
            rest = x[whole:].copy()
            x = x[:whole].reshape(-1, channels).mean(axis=1, dtype=np.float32)
            return x, rest
        return x, np.zeros(0, np.float32)

    def _new_out_resampler(self, rate: int):
        if rate == self.audio_out_rate:
            return None
        import soxr
        return soxr.ResampleStream(rate, self.audio_out_rate, 1, dtype="float32", quality="HQ")

    @staticmethod
    def _to_int16(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)

    def _append_out(self, samples_i16: np.ndarray) -> None:
        if samples_i16.size:
            self._out = np.concatenate([self._out, samples_i16]) if self._out.size else samples_i16.copy()

    def _append_out_input(self, mono: np.ndarray) -> None:
        if self._out_rs is not None:
            mono = self._out_rs.resample_chunk(mono, last=False) if mono.size else np.zeros(0, np.float32)
        self._append_out(self._to_int16(mono))

    def _feed(self, y16: np.ndarray, t0: float) -> None:
        """16 kHz samples into the feature stream; ready frames join the queue."""
        feats = self._fs.push(y16) if y16.size else []
        ms = (time.perf_counter() - t0) * 1000.0 + self._feat_carry_ms
        if not feats:
            self._feat_carry_ms = ms
            return
        self._feat_carry_ms = 0.0
        per = ms / len(feats)
        for f in feats:
            self._queue.append((self._fs_frame0 + f.frame_index, f, per))
        while len(self._queue) > self.max_pending_frames:
            k, f, _ = self._queue.popleft()
            self._driver.step(f)                 # motion stays continuous
            self._overflow_dropped += 1
            self._next_k = k + 1
            self._audio_from_k = k + 1
            self._trim_out(self._out_at(k + 1))

    def _push_zeros16(self, n: int) -> None:
        """n 16 kHz zeros into the feature stream, and the matching zeros into audio out."""
        if n > 0:
            self._feed(np.zeros(n, dtype=np.float32), time.perf_counter())
        if self.audio_out:
            target = _round_half_up(self.clock * self.audio_out_rate / SAMPLE_RATE)
            if target > self._out_total:
                self._append_out(np.zeros(target - self._out_total, dtype=np.int16))

    def _flush_streams(self) -> None:
        """End the current input stream: drain both resamplers (AudioInput for the features, the
        audio-out one) and line the two timelines up again (zeros on the side that is behind)."""
        if self._ai is not None and (self._ai.samples_in or self._ai.pending_samples):
            t0 = time.perf_counter()
            self._feed(self._ai.flush(), t0)
        if self.audio_out:
            if self._out_rs is not None:
                tail = self._out_rs.resample_chunk(np.zeros(0, np.float32), last=True)
                self._append_out(self._to_int16(np.asarray(tail, dtype=np.float32)))
                self._out_rs = self._new_out_resampler(self._ai.sample_rate)
            self._out_partial = np.zeros(0, np.float32)
            behind = _round_half_up(self._out_total * SAMPLE_RATE / self.audio_out_rate) - self.clock
            if behind > 0:
                self._feed(np.zeros(behind, dtype=np.float32), time.perf_counter())
            self._push_zeros16(0)

    def _trim_out(self, upto: int) -> None:
        if upto > self._out_base:
            cut = min(upto - self._out_base, self._out.size)
            self._out = self._out[cut:]
            self._out_base += cut

    # -- frames out ----------------------------------------------------------------------------
    def _ready_count(self) -> int:
        if not self.audio_out:
            return len(self._queue)
        n = 0
        total = self._out_total
        for k, _, _ in self._queue:
            if self._out_at(k + 1) > total:
                break
            n += 1
        return n

    def frames_ready(self) -> int:
        """Frames whose audio is complete (``next_frame`` returns one without filling silence)."""
        with self._lock:
            return self._ready_count()

    def _fill_for(self, k: int) -> None:
        """Make frame k ready: flush the resamplers, then add exactly the missing zeros."""
        self._flush_streams()
        if self._ready_count():
            return
        if not self._queue:
            j = k - self._fs_frame0
            fs = self._fs
            end = _round_half_up((j + 1) * SAMPLE_RATE / fs.fps)
            vad_end = -(-end // fs.vad_frame) * fs.vad_frame
            ready_at = max(end + fs.lookahead_samples, vad_end)
            self._push_zeros16(ready_at - fs.samples_received)
        if self.audio_out and self._queue and not self._ready_count():
            # rounding between the 16 kHz and the audio-out timelines can leave the head frame's
            # audio one sample short: complete it with zeros
            need = self._out_at(self._queue[0][0] + 1) - self._out_total
            self._append_out(np.zeros(max(need, 0), dtype=np.int16))

    def next_frame(self, *, fill_silence: bool = False, latest: bool = False) -> Optional[Frame]:
        """The next frame, or None when no frame's audio is complete (``fill_silence=False``).

        ``fill_silence``: if the next frame's audio has not been pushed, fill exactly the missing
        samples with silence first (idle motion runs on without a mic).
        ``latest``: step the motion through every ready frame but synthesize only the newest
        (``Frame.dropped`` counts the others): bounded latency when the caller fell behind.
        """
        with self._pull_lock:
            with self._lock:
                self._check_open()
                n = self._ready_count()
                if n == 0 and fill_silence:
                    self._fill_for(self._next_k)
                    n = self._ready_count()
                if n == 0:
                    return None
                take = [self._queue.popleft() for _ in range(n if latest else 1)]
                t0 = time.perf_counter()
                x = None
                for _, f, _ in take:
                    x = self._driver.step(f)
                t1 = time.perf_counter()
                x = np.asarray(x, dtype=np.float32)
                ws = self._path(x)
                t2 = time.perf_counter()
                k, feats, _ = take[-1]
                feat_ms = sum(t[2] for t in take)
                dropped = len(take) - 1 + self._overflow_dropped
                self._overflow_dropped = 0
                audio = None
                if self.audio_out:
                    lo, hi = self._out_at(self._audio_from_k), self._out_at(k + 1)
                    audio = self._out[lo - self._out_base: hi - self._out_base].copy()
                    self._trim_out(hi)
                self._audio_from_k = k + 1
                self._next_k = k + 1
                latency = self.latency_ms
                engine, output = self.engine, self.output
            # synthesis outside the session lock: push_audio from another thread goes on meanwhile
            img = engine.synthesize(ws)
            if img.device.type == "cuda":
                torch.cuda.synchronize(img.device)
            t3 = time.perf_counter()
            if output == "uint8":
                image = engine.to_uint8(img)[0]
            else:
                image = engine.resize(img)[0]
                if image.device.type == "cuda":
                    torch.cuda.synchronize(image.device)
            t4 = time.perf_counter()
            timings = {"features": feat_ms, "motion": (t1 - t0) * 1e3, "latent": (t2 - t1) * 1e3,
                       "synthesis": (t3 - t2) * 1e3, "convert": (t4 - t3) * 1e3}
            timings["total"] = sum(timings.values())
            pts = self.frame_start(k)
            frame = Frame(index=k, pts=pts, time_s=pts / SAMPLE_RATE, image=image, x=x.copy(),
                          voiced=float(feats.voiced), rms=float(feats.rms), audio=audio,
                          audio_rate=self.audio_out_rate if self.audio_out else None, dropped=dropped,
                          timings=timings, latency_ms=latency)
            with self._lock:
                self._frames_out += 1
                self._dropped_total += dropped
                self._timings.append(timings)
            return frame

    # -- control -------------------------------------------------------------------------------
    def set_identity(self, identity, *, truncation_psi: Optional[float] = None) -> None:
        """Change the face: int seed (mapped with ``truncation_psi``, default the engine's), w
        [w_dim] / ws [num_ws, w_dim] / [1, num_ws, w_dim] (array or tensor; truncated only when
        ``truncation_psi`` is given), or a path to a .npy with one of those. Resets the anchor
        and the driver (``driver.reset(anchor)``). ValueError / FileNotFoundError, unchanged."""
        ws = self.engine.identity_ws(identity, truncation_psi)
        with self._lock:
            self._check_open()
            self._path.set_anchor(ws=ws)
            self._anchor = ws
            self._driver.reset(ws)

    def set_driver(self, driver) -> None:
        """``"default"`` (the engine's :attr:`AvatarEngine.default_driver`: the trained LSTM of the
        demo generator over the idle driver's blinks, else idle), ``"idle"``, ``"lstm:PATH.safetensors"``,
        ``"lstm+idle:PATH.safetensors"`` (the model's directions, the idle driver's for the rest),
        ``"trajectory:PATH.npy"`` or a MotionDriver
        (its ``fps`` must be the session's, its ``names`` in the engine's direction set). A driver
        trained with another feature lookahead/window can only be set before any audio (or right
        after :meth:`interrupt`), because the feature stream is rebuilt then."""
        with self._lock:
            self._check_open()
            drv = self._make_driver(driver)
            look, window = self._feature_needs(drv)
            fs = self._fs
            same_look = look is None or abs(look - fs.lookahead_ms) < 1e-9
            same_window = window is None or _round_half_up(window / 10.0) == fs.window_frames
            if not (same_look and same_window):
                idle = (not self._queue and self.clock == self.frame_start(self._next_k)
                        and (self._ai is None or (self._ai.samples_in == 0 and not self._ai.pending_samples)))
                if not idle:
                    raise ValueError(f"this driver needs {look if look is not None else fs.lookahead_ms:g} ms "
                                     f"lookahead and a {window if window is not None else 'default'} ms mel window; "
                                     f"the session streams {fs.lookahead_ms:g} ms: set it before pushing audio or "
                                     "after interrupt(), or create the session with it")
                self._restart_features(look if look is not None else fs.lookahead_ms, window)
            self._install_driver(drv)

    def _restart_features(self, lookahead_ms: float, window_ms: Optional[float]) -> None:
        """New feature stream starting at the next frame's audio; everything pushed after that
        point (queue, resampler, audio out) is discarded."""
        k0 = self._next_k
        self._queue.clear()
        self._fs = self._new_feature_stream(lookahead_ms, window_ms)
        self._fs_frame0 = k0
        self._fs_sample0 = self.frame_start(k0)
        self._feat_carry_ms = 0.0
        if self._ai is not None:
            self._ai = AudioInput(self._ai.sample_rate, self._ai.channels, self._ai.dtype)
        if self.audio_out:
            if self._ai is not None:
                self._out_rs = self._new_out_resampler(self._ai.sample_rate)
            self._out_partial = np.zeros(0, np.float32)
            cut = self._out_at(k0)
            if self._out_total > cut:
                self._out = self._out[:max(0, cut - self._out_base)]
            elif self._out_total < cut:
                self._append_out(np.zeros(cut - self._out_total, dtype=np.int16))

    def interrupt(self) -> float:
        """Barge-in: ``driver.flush()`` (mouth back to rest within a few frames) and drop all audio
        pushed after the last returned frame (ready frames, resampler contents, audio out): the
        clock goes back to the start of the next frame, and new audio continues from there.
        Returns the seconds of pushed audio that were dropped (for callers that keep their own
        account of the audio timeline)."""
        with self._lock:
            self._check_open()
            pending = float(self._ai.pending_samples) if self._ai is not None else 0.0
            before = self.clock + pending
            self._driver.flush()
            self._restart_features(self._fs.lookahead_ms, self._fs.window_frames * 10.0)
            self._overflow_dropped = 0
            return max(0.0, before - self.clock) / SAMPLE_RATE

    def stats(self) -> dict:
        """``frames`` and ``dropped`` so far, ``latency_ms``, and per stage p50/p95 ms over the last
        250 frames: ``{"timings": {"synthesis": {"p50": .., "p95": ..}, ...}}``."""
        with self._lock:
            rows = list(self._timings)
            out = {"frames": self._frames_out, "dropped": self._dropped_total, "latency_ms": self.latency_ms,
                   "window": len(rows), "timings": {}}
        for s in STAGES:
            v = np.array([r[s] for r in rows], dtype=np.float64)
            out["timings"][s] = ({"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                                 if v.size else {"p50": None, "p95": None})
        return out

    def close(self) -> None:
        """Release the session's buffers; later calls raise RuntimeError (close twice is fine)."""
        with self._lock:
            if not self._closed:
                self.engine.detach()
            self._closed = True
            self._queue.clear()
            self._ai = None
            self._out_rs = None
            self._out = np.zeros(0, dtype=np.int16)

    def __enter__(self) -> "AvatarSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
