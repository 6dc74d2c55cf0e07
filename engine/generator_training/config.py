"""The demo generator's training settings: file names, objectives, the shipped schedule, and
:class:`TrainDemoConfig` (the networks' shapes live in GeneratorConfig / DiscriminatorConfig)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from engine.demo_world.latent import MOTION_Z, Z_DIM, rest_pairs
from engine.synthesis.networks import Generator, GeneratorConfig, demo_config

__all__ = ["STATE_FILE", "EXPORT_FILE", "DIRECTIONS_FILE", "LOG_FILE", "MAX_EXPORT_BYTES", "STATE_VERSION", "OBJECTIVES",
           "RECON_SCALES", "MOTION_MASK_THRESHOLD", "RECON_LR", "SCHEDULED", "DEMO_SCHEDULE", "DEMO_SCHEDULE_KIMG",
           "DEMO2_SCHEDULE", "DEMO2_SCHEDULE_KIMG", "DEMO2W_SCHEDULE", "DEMO2W_SCHEDULE_KIMG", "SCHEDULE_KIMG", "SCHEDULE_DEFAULTS", "POSE_FIELDS", "SCHEDULES", "scheduled_settings", "recon_config", "export_bytes", "TrainDemoConfig"]

STATE_FILE = "trainer_state.pt"
EXPORT_FILE = "demo_generator.safetensors"
DIRECTIONS_FILE = "demo_directions.json"
LOG_FILE = "train_log.jsonl"
MAX_EXPORT_BYTES = 8_000_000        # the shipped float16 weights must stay under 8 MB
STATE_VERSION = 1
OBJECTIVES = ("gan", "recon")
RECON_SCALES = (1, 2, 4)            # L1 at full size and average-pooled by 2 and 4
MOTION_MASK_THRESHOLD = 0.04       # recon --motion-weight: a pixel "moved" when a channel changes by > 2% of range
RECON_LR = 0.008                    # the recon objective's default Adam lr (a regression takes more than a GAN)
#: the fields a schedule sets, and their values before its first phase
SCHEDULED = {"l2_weight": 0.0, "grad_weight": 0.0, "frozen": (), "motion_weight": 0.0, "pose_scale": 1.0,
             "single_motion": 0.0, "single_weights": {}}
#: ``--schedule demo``, the shipped demo generator's curriculum (its train_log.jsonl): from each kimg
#: on, these settings (cumulative). Plain L1 first (layout and colour); then edges and squared
#: error (small features); then the head held still (eyes and mouths did not form while the head
#: also turned); then the L1 over moving pixels (mouths on every skin tone). 258 kimg: ~2 h on the
#: 2-core VM.
DEMO_SCHEDULE = ((0.0, {}),
                 (35.0, {"grad_weight": 2.0}),
                 (45.5, {"l2_weight": 4.0}),
                 (58.0, {"frozen": ("yaw", "pitch", "roll", "gaze_x", "gaze_y")}),
                 (200.0, {"motion_weight": 1.0}),
                 (209.0, {"motion_weight": 3.0}))
DEMO_SCHEDULE_KIMG = 258.0
#: ``--schedule demo2`` (with ``--init demo``): demo world v2, the shipped generator fine-tuned with
#: the head and eyes free. The same loss terms as the demo schedule's end, the adversarial term
#: on top, and head angles and gaze widened in steps (``pose_scale``: the renders' pose and gaze
#: coordinates of z times this), so that the faces learn to turn a little before they turn far
#: (the whole range at once blurred eyes and mouths away in the first 2 kimg). Half the linear rows
#: move one field each (``single_motion``): without them the gaze directions had not grown from
#: their random start by 68 kimg, the eyes' few pixels lost among the head's in the motion term.
DEMO2_SCHEDULE = ((0.0, {"grad_weight": 2.0, "l2_weight": 4.0, "motion_weight": 3.0, "pose_scale": 0.3,
                          "single_motion": 0.5}),
                  (10.0, {"pose_scale": 0.5}),
                  (25.0, {"pose_scale": 0.75}),
                  (45.0, {"pose_scale": 1.0}))
DEMO2_SCHEDULE_KIMG = 80.0
#: ``--schedule demo2w``: demo2, then 32 kimg with the weak fields drawn more often (115 min of steps
#: in all): yaw 0.07 → 0.40, pitch 0.47 → 0.78, gaze_x 0.42 → 0.81, HOG detection to the renderer's
#: rate, but the mouth 1.00 → 0.88 and lip-sync 0.925 → 0.911 (docs/demo_world.md); not shipped
DEMO2W_SCHEDULE = DEMO2_SCHEDULE + ((80.0, {"single_weights": {"yaw": 4.0, "pitch": 2.0, "gaze_x": 3.0,
                                                                "gaze_y": 3.0}}),)
DEMO2W_SCHEDULE_KIMG = 112.0
SCHEDULES = {"none": (), "demo": DEMO_SCHEDULE, "demo2": DEMO2_SCHEDULE, "demo2w": DEMO2W_SCHEDULE}
SCHEDULE_KIMG = {"demo": DEMO_SCHEDULE_KIMG, "demo2": DEMO2_SCHEDULE_KIMG, "demo2w": DEMO2W_SCHEDULE_KIMG}
#: settings a new run of a schedule takes unless given: demo2 fine-tunes (a lower lr) with the
#: adversarial term (its image gradient 0.3 of the reconstruction's)
SCHEDULE_DEFAULTS = {"demo2": {"lr": 0.002, "adv_weight": 0.3}}
SCHEDULE_DEFAULTS["demo2w"] = SCHEDULE_DEFAULTS["demo2"]          # demo2 and its last phase
#: the motion fields ``pose_scale`` narrows
POSE_FIELDS = ("yaw", "pitch", "roll", "gaze_x", "gaze_y")


def scheduled_settings(schedule: str, kimg: float) -> dict:
    """The SCHEDULED fields' values at ``kimg`` of schedule ``schedule`` ({} for "none")."""
    phases = SCHEDULES[schedule]
    if not phases:
        return {}
    out = dict(SCHEDULED)
    for start, settings in phases:
        if kimg + 1e-9 >= start:
            out.update(settings)
    return out




def recon_config(base: Optional[GeneratorConfig] = None) -> GeneratorConfig:
    """The generator shape for ``--objective recon``: ``base`` (default the demo shape) with z the
    demo world's code (``Z_DIM`` wide, not normalised) and a mapping network at full learning rate."""
    return dataclasses.replace(base or demo_config(), z_dim=Z_DIM, normalize_z=False, mapping_lr_multiplier=1.0,
                               z_rest=rest_pairs())




def export_bytes(config: GeneratorConfig) -> int:
    """Size of the float16 tensors of a generator with this config (the export is this + ~10 kB header)."""
    G = Generator(config)
    return 2 * sum(t.numel() for t in G.state_dict().values())


@dataclass
class TrainDemoConfig:
    """Optimisation settings (the networks' shapes live in GeneratorConfig / DiscriminatorConfig)."""
    kimg: float = 100.0                  # total length in thousands of real images shown to D
    batch: int = 16
    lr: float = 0.0025                   # Adam lr of G and D
    r1_gamma: Optional[float] = None     # None: 0.0002 · R² / batch (NVlabs' auto heuristic)
    r1_interval: int = 16                # lazy R1 every this many steps
    ema_kimg: Optional[float] = None     # G_ema half-life; None: batch · 10 / 32
    ema_rampup: Optional[float] = 0.05   # None: no ramp-up
    style_mixing: float = 0.9
    mbstd_group: int = 4
    w_avg_beta: float = 0.995
    snap_kimg: float = 4.0               # grid + state + export every this many kimg
    grid: int = 4                        # samples grid is grid x grid images
    objective: str = "gan"               # "gan" (StyleGAN2's) or "recon" (decoder of the demo world's code)
    linear_motion: float = 0.5           # recon: share of each batch whose motion enters w linearly
    grad_weight: float = 0.0             # recon: weight of the L1 between image gradients (edges: eyes, mouth)
    l2_weight: float = 0.0               # recon: weight of a squared error next to the L1 (features a median hides)
    frozen: tuple = ()                   # recon: motion fields held at rest in the targets (G learns to ignore them)
    motion_weight: float = 0.0           # recon: weight of an L1 averaged over only the pixels the motion changes
    pose_scale: float = 1.0              # recon: the targets' head-angle and gaze coordinates of z times this
    single_motion: float = 0.0           # recon: share of the linear-motion samples that move one motion field only
    single_weights: dict = dataclasses.field(default_factory=dict)  # recon: {field: how often the one-field
    #                                      samples pick it, relative to 1 for the fields not named}
    schedule: str = "none"               # recon: "demo"/"demo2" set the fields above by kimg (SCHEDULES)
    adv_weight: float = 0.0              # recon: adversarial term, as a ratio of its image gradient to the recon's
    init: str = ""                       # recon: a fresh run starts from this exported generator ("" = NVlabs init)

    # settings a resumed run may change
    MUTABLE = ("kimg", "snap_kimg", "grid", "grad_weight", "l2_weight", "frozen", "motion_weight", "schedule",
               "adv_weight", "pose_scale", "single_motion", "single_weights")

    def validate(self) -> None:
        if not (math.isfinite(self.kimg) and self.kimg >= 0):
            raise ValueError(f"kimg must be a finite number >= 0, got {self.kimg!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.mbstd_group < 1:
            raise ValueError(f"mbstd_group must be >= 1, got {self.mbstd_group}")
        g = min(self.mbstd_group, self.batch)
        if self.batch % g:
            raise ValueError(f"batch {self.batch} must be a multiple of the minibatch-stddev group size {g}")
        if self.r1_interval < 1:
            raise ValueError(f"r1_interval must be >= 1, got {self.r1_interval}")
        for name in ("lr", "r1_gamma", "ema_kimg", "ema_rampup", "snap_kimg", "grad_weight", "l2_weight",
                     "motion_weight", "adv_weight", "pose_scale"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0 or self.snap_kimg <= 0:
            raise ValueError("lr and snap_kimg must be > 0")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"style_mixing must be a probability in [0, 1], got {self.style_mixing!r}")
        if not 0 <= self.w_avg_beta < 1:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta!r}")
        self.frozen = tuple(self.frozen)
        bad = [f for f in self.frozen if f not in MOTION_Z]
        if bad:
            raise ValueError(f"frozen: unknown motion fields {bad} (known: {', '.join(MOTION_Z)})")
        self.single_weights = dict(self.single_weights)
        bad = {f: v for f, v in self.single_weights.items()
               if f not in MOTION_Z or not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"single_weights: want {{motion field: finite weight >= 0}} (fields: {', '.join(MOTION_Z)}), "
                             f"got {bad}")
        if self.single_weights and not any(self.single_weights.get(f, 1.0) > 0 for f in MOTION_Z
                                           if f not in self.frozen):
            raise ValueError("single_weights: every free motion field has weight 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule != "none" and self.objective != "recon":
            raise ValueError("a schedule sets the recon objective's loss terms; the gan objective has none")
        if (self.adv_weight > 0 or self.init) and self.objective != "recon":
            raise ValueError("adv_weight and init belong to the recon objective (the gan objective is all adversarial)")
        for name in ("linear_motion", "single_motion"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 1 <= self.grid <= 16:
            raise ValueError(f"grid must be 1..16, got {self.grid}")

    def gamma(self, resolution: int) -> float:
        return 0.0002 * resolution**2 / self.batch if self.r1_gamma is None else float(self.r1_gamma)

    def ema_half_life_kimg(self) -> float:
        return self.batch * 10 / 32 if self.ema_kimg is None else float(self.ema_kimg)

    @property
    def total_steps(self) -> int:
        return int(math.ceil(self.kimg * 1000 / self.batch - 1e-9))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainDemoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


