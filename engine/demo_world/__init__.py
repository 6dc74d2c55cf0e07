"""The demo world: procedural faces (their parameters :mod:`.params`, the renderer :mod:`.faces`), their data set (:mod:`.dataset`) and the
probes that read parameters back from images (:mod:`.probes`)."""
from .faces import render_face
from .params import (
                     HAIR_STYLES,
                     IDENTITY_FIELDS,
                     IDENTITY_RANGES,
                     MOTION_FIELDS,
                     MOTION_RANGES,
                     Identity,
                     Motion,
                     sample_identity,
                     sample_motion,
)

__all__ = ["Identity", "Motion", "IDENTITY_FIELDS", "MOTION_FIELDS", "IDENTITY_RANGES", "MOTION_RANGES",
           "HAIR_STYLES", "render_face", "sample_identity", "sample_motion"]
