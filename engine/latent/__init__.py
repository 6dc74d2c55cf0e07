"""Latent geometry: global (PCA) and local (Jacobian SVD) bases of W, traversal, identity latents.

``LatentBasis`` holds directions and their scales; ``global_basis`` / ``local_basis`` make one;
``LatentPath`` turns control vectors x_t into per-layer ws around an anchor face.
"""
from .identity import (  # noqa: F401
    interpolate,
    mean_ws,
    truncate,
    w_from_seed,
    ws_from_npy,
    z_from_seed,
)
from .latent_basis import LatentBasis, generator_hash  # noqa: F401
from .local import local_basis, local_traverse, mapping_jacobian, singular_spectrum  # noqa: F401
from .path import LatentPath  # noqa: F401
from .pca import global_basis  # noqa: F401
