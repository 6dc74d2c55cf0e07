"""The shape of a StyleGAN2 generator: :class:`GeneratorConfig` (with the channel table it shares
with the discriminator) and the demo generator's shape, :func:`demo_config`."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["ChannelTableConfig", "GeneratorConfig", "demo_config", "DEMO_SEED"]

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
# The embedded default ("--generator demo")

DEMO_SEED = 20261127


def demo_config() -> GeneratorConfig:
    """128 px, narrow channels: renders in milliseconds on a CPU."""
    return GeneratorConfig(
        z_dim=128, w_dim=128, mapping_layers=4, mapping_lr_multiplier=0.01, img_resolution=128,
        channels={4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16}, conv_clamp=256.0,
    )
