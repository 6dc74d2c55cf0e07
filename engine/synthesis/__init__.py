"""StyleGAN2 synthesis: the generator (``networks``) and its checkpoint readers (``checkpoints``)."""
from .networks import (  # noqa: F401
    NOISE_MODES,
    Generator,
    GeneratorConfig,
    MappingNetwork,
    SynthesisNetwork,
    demo_config,
    demo_generator,
    seed_to_z,
)


def load_generator(source, **kwargs):
    """Load a generator from a checkpoint path or a preset name (see ``checkpoints.load_generator``)."""
    from .checkpoints import load_generator as _load

    return _load(source, **kwargs)
