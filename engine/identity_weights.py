"""What an inverted identity changes in the engine's generator, and keeping every renderer in step.

An identity ``.npz`` (``engine.invert``) may carry projected noise maps and PTI-tuned synthesis
weights. Both belong to the engine's generator, not to one session, so applying them affects every
session of the engine; the engine says so in one line. Rules:

* the file is checked against the checkpoint hash the engine was loaded with
  (:attr:`AvatarEngine.checkpoint_hash`), not the generator's current content, so the same file
  opens in any number of sessions after its noise maps went in;
* noise maps: the last identity file opened wins (said when they change);
* tuned weights: one tuned identity per engine. A second, different tuned file is refused (it
  needs an engine of its own); an untuned file opened while tuned weights are in is rendered
  with them, said once per file;
* the renderer follows: the plain generator and a torch backend's copy are updated in place
  (captured CUDA graphs stay valid); an ONNX Runtime or TensorRT backend, which bakes the
  weights in, is rebuilt from the updated generator (said); a custom ``synthesize=`` callable
  cannot take tuned weights (refused) and does not get noise maps (said).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from engine.inversion.identity_file import IdentityFile
from engine.inversion.project import apply_noise
from engine.inversion.tune import apply_tuned

__all__ = ["IdentityWeights"]


class IdentityWeights:
    """One per engine: which identity file's noise maps and tuned weights its generator holds."""

    def __init__(self, G, *, renderer: Callable[[], object], rebuild: Optional[Callable[[], None]] = None,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.G = G
        self._renderer = renderer             # the engine's current synthesize callable (None: G itself)
        self._rebuild = rebuild               # rebuilds a baked backend from G
        self._log = log
        self.noise_from: Optional[str] = None
        self.tuned_from: Optional[str] = None
        self._said: set[str] = set()

    def _say(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)

    def use(self, path, ident: IdentityFile) -> None:
        """Put ``ident``'s noise maps and tuned weights into the generator (ValueError when its
        tuned weights cannot go in)."""
        key = str(Path(path).resolve())
        fn = self._renderer()
        custom = fn is not None and not hasattr(fn, "describe")
        changed = []
        if ident.tuned is not None and self.tuned_from != key:
            if self.tuned_from is not None:
                raise ValueError(f"{path}: this engine already renders the tuned weights of {self.tuned_from}; "
                                 "a second tuned identity needs an engine (server process) of its own")
            if custom:
                raise ValueError(f"{path}: has tuned weights, which a custom synthesize= callable cannot take")
            apply_tuned(self.G, {k: torch.from_numpy(v) for k, v in ident.tuned.items()})
            self.tuned_from = key
            changed.append("tuned synthesis weights")
        elif ident.tuned is None and self.tuned_from is not None and key not in self._said:
            self._said.add(key)
            self._say(f"{path}: rendered with the tuned weights of {self.tuned_from} that this engine holds")
        if ident.noise and self.noise_from != key:
            apply_noise(self.G, {k: torch.from_numpy(v) for k, v in ident.noise.items()})
            self.noise_from = key
            changed.append("projected noise maps")
        if not changed:
            return
        if custom:
            self._say(f"{path}: its noise maps are not used: a custom synthesize= callable renders this engine")
            return
        self._sync(fn)
        self._say(f"{path}: its {' and '.join(changed)} now drive this engine's generator (all its sessions)")

    def _sync(self, fn) -> None:
        if fn is None:
            return
        backend_G = getattr(fn, "G", None)
        if isinstance(backend_G, torch.nn.Module):          # a torch backend: its own copy, in place
            if backend_G is not self.G:
                with torch.no_grad():
                    backend_G.load_state_dict(self.G.state_dict())
        elif self._rebuild is not None:
            self._say(f"rebuilding the {fn.describe().get('backend')} backend for the new weights")
            self._rebuild()
