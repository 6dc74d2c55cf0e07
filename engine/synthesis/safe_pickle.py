"""Restricted unpickling of NVlabs network pickles.

An NVlabs stylegan2-ada-pytorch / stylegan3 network pickle stores every network as a
"persistent object": the pickle calls ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with ``meta = dict(type='class', version, module_src, class_name, state)``, and the NVlabs code
then ``exec``\\ s ``module_src`` to rebuild the class. That is arbitrary code execution by design.

This module reads the same bytes without running anything from the file:

* ``SafeUnpickler.find_class`` resolves only the globals listed in ``_ALLOWED_GLOBALS`` and maps
  each one to a stand-in defined here. Every other global (``posix.system``, ``builtins.eval``,
  ``subprocess.Popen``, ...) raises :class:`ForbiddenGlobal`, which names it.
* The persistent-object hook is replaced by :func:`_reconstruct_persistent_obj`, which returns a
  :class:`PersistentObject` that records ``class_name`` and ``state``. ``module_src`` is kept as
  text and never imported, compiled or executed.
* Tensors pickled by ``pickle.dump`` of CPU torch tensors arrive as
  ``torch.storage._load_from_bytes(bytes)``; those bytes are themselves a (legacy-format) torch
  file and are read with ``torch.load(..., weights_only=True)``.
* NumPy scalars and arrays (``weight_gain`` is a ``numpy.float64``; StyleGAN3 layers hold small
  integer arrays) are rebuilt from raw bytes for plain numeric dtypes only.

Nothing here knows about generators; :mod:`engine.synthesis.checkpoints` interprets the result.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from .pickle_scan import PickleLimitError, PickleLimits, scan_pickle, scan_torch_file

__all__ = [
    "ForbiddenGlobal",
    "PickleLimitError",
    "UnknownPersistentClass",
    "PersistentObject",
    "SafeUnpickler",
    "safe_load",
    "KNOWN_PERSISTENT_CLASSES",
    "forbidden_global_from_torch_error",
]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle references a global that is not on the allowlist."""

    def __init__(self, global_name: str, detail: str = ""):
        self.global_name = global_name
        msg = f"refusing to load global '{global_name}'"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class UnknownPersistentClass(pickle.UnpicklingError):
    """A persistent object names a class that is not part of the NVlabs network code."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        super().__init__(
            f"refusing persistent object of unknown class '{class_name}' "
            "(its pickled source code is never executed)"
        )


# Class names decorated with @persistence.persistent_class in NVlabs stylegan2-ada-pytorch
# (training/networks.py, training/augment.py) and stylegan3 (training/networks_stylegan2.py,
# training/networks_stylegan3.py, training/augment.py). A full training snapshot holds G, D,
# G_ema and augment_pipe, so the discriminator and augmentation classes occur in real files.
KNOWN_PERSISTENT_CLASSES = frozenset(
    {
        "Generator",
        "MappingNetwork",
        "SynthesisNetwork",
        "SynthesisBlock",
        "SynthesisLayer",
        "ToRGBLayer",
        "FullyConnectedLayer",
        "Conv2dLayer",
        "Discriminator",
        "DiscriminatorBlock",
        "DiscriminatorEpilogue",
        "MinibatchStdLayer",
        "AugmentPipe",
        "SynthesisInput",  # StyleGAN3 only; refused later with a clear message
    }
)


@dataclass
class PersistentObject:
    """What ``_reconstruct_persistent_obj(meta)`` was asked to build, recorded, not built.

    ``state`` is the pickled ``Module.__dict__``: ``_parameters``, ``_buffers``, ``_modules``,
    ``training``, the layer's own attributes, ``_init_args`` and ``_init_kwargs``.
    """

    class_name: str
    version: int | None
    state: dict
    module_src: str = field(repr=False, default="")

    # -- convenience accessors used by the checkpoint reader ------------------------------
    @property
    def parameters(self) -> dict:
        return _as_dict(self.state.get("_parameters"))

    @property
    def buffers(self) -> dict:
        return _as_dict(self.state.get("_buffers"))

    @property
    def modules(self) -> dict:
        return _as_dict(self.state.get("_modules"))

    @property
    def init_kwargs(self) -> dict:
        return _as_dict(self.state.get("_init_kwargs"))

    @property
    def init_args(self) -> tuple:
        args = self.state.get("_init_args")
        return tuple(args) if isinstance(args, (tuple, list)) else ()


def _as_dict(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------------
# Stand-ins for the allowed globals.


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``; never runs code."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("persistent object metadata is not a dict")
    if meta.get("type") != "class":
        raise pickle.UnpicklingError(f"persistent object of unsupported type {meta.get('type')!r}")
    class_name = meta.get("class_name")
    if not isinstance(class_name, str):
        raise pickle.UnpicklingError("persistent object without a class name")
    if class_name not in KNOWN_PERSISTENT_CLASSES:
        raise UnknownPersistentClass(class_name)
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent object '{class_name}' has a non-dict state")
    version = meta.get("version")
    src = meta.get("module_src")
    return PersistentObject(
        class_name=class_name,
        version=version if isinstance(version, int) else None,
        state=dict(state),
        module_src=src if isinstance(src, str) else "",
    )


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict with attribute reads."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:  # BUILD with the (empty) instance __dict__
        if state:
            raise pickle.UnpicklingError("unexpected instance state on EasyDict")


_WEIGHTS_ONLY_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def python3_global_name(name: str) -> str:
    """The Python 3 name of a pickled global. ``torch.save`` writes protocol 2, which spells
    ``subprocess.Popen`` as ``commands.Popen`` and builtins as ``__builtin__`` (torch's error
    message then shows a bare ``eval``)."""
    module, _, attr = name.rpartition(".")
    if not module:
        return f"builtins.{attr}"
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def forbidden_global_from_torch_error(exc: BaseException) -> ForbiddenGlobal | None:
    """Turn torch's ``weights_only`` refusal into a :class:`ForbiddenGlobal` naming the global."""
    match = _WEIGHTS_ONLY_GLOBAL.search(str(exc))
    if match is None:
        return None
    return ForbiddenGlobal(python3_global_name(match.group(1)), "rejected by torch.load(weights_only=True)")


def _load_from_bytes(data: Any):
    """Stand-in for ``torch.storage._load_from_bytes``: a nested torch file, scanned
    (:func:`~engine.synthesis.pickle_scan.scan_torch_file`), then read weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("tensor storage payload is not bytes")
    stream = io.BytesIO(bytes(data))
    scan_torch_file(stream, len(data), what="a tensor storage payload")    # leaves it at the start
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = forbidden_global_from_torch_error(exc)
        if named is not None:
            raise named from None
        raise pickle.UnpicklingError(f"corrupt tensor storage: {_first_line(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... on damaged bytes
        raise pickle.UnpicklingError(f"corrupt tensor storage: {_first_line(exc)}") from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("tensor storage payload does not hold a storage")
    return storage


def _int_tuple(value: Any, what: str) -> tuple:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of ints")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; hooks and metadata are dropped."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("tensor built from something that is not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError("tensor storage offset is not a non-negative int")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError("tensor size and stride differ in length")
    if isinstance(storage, torch.TypedStorage):
        dtype, untyped = storage.dtype, storage._untyped_storage
    else:
        dtype, untyped = torch.uint8, storage
    # torch would silently grow the storage to fit; a file must not choose our allocations.
    if any(s < 0 for s in size) or any(st < 0 for st in stride):
        raise pickle.UnpicklingError("tensor with negative size or stride")
    if all(s > 0 for s in size):
        extent = storage_offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1
        itemsize = torch.empty((), dtype=dtype).element_size()
        if extent * itemsize > untyped.nbytes():
            raise pickle.UnpicklingError("tensor extends past the end of its storage")
    try:
        return torch.empty((0,), dtype=dtype).set_(untyped, storage_offset, size, stride)
    except RuntimeError as exc:
        raise pickle.UnpicklingError(f"inconsistent tensor layout: {_first_line(exc)}") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """Stand-in for ``torch._utils._rebuild_parameter``: parameters come back as plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter built from something that is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data)


class _DType:
    """Stand-in for ``numpy.dtype(spec, align, copy)`` restricted to plain numeric types.

    NumPy pickles a dtype as ``numpy.dtype('f8', False, True)`` followed by BUILD with
    ``(version, byteorder, subdescr, names, fields, elsize, alignment, flags)``.
    """

    _SPEC = re.compile(r"^(b1|[iu][1248]|f[248])$")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False):
        if not isinstance(spec, str) or not self._SPEC.match(spec):
            raise ForbiddenGlobal("numpy.dtype", f"dtype {spec!r} is not a plain numeric type")
        self.spec = spec
        self.byteorder = "|" if spec in ("b1", "i1", "u1") else "<"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise pickle.UnpicklingError("malformed numpy dtype state")
        byteorder = state[1]
        if byteorder not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("malformed numpy dtype byte order")
        if any(part is not None for part in state[2:5]):
            raise ForbiddenGlobal("numpy.dtype", "structured dtypes are not allowed")
        self.byteorder = byteorder

    def to_numpy(self) -> np.dtype:
        order = "" if self.byteorder in ("|", "=") else self.byteorder
        return np.dtype(order + self.spec)


def _np_scalar(dtype: Any, data: Any = None):
    """Stand-in for ``numpy.core.multiarray.scalar``; returns a Python number."""
    if not isinstance(dtype, _DType) or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("malformed numpy scalar")
    np_dtype = dtype.to_numpy()
    if len(data) != np_dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar has the wrong number of bytes")
    return np.frombuffer(bytes(data), dtype=np_dtype, count=1)[0].item()


class _NDArrayType:
    """Stand-in for ``numpy.ndarray`` as it appears in ``_reconstruct(ndarray, (0,), b'b')``."""


class _NDArray:
    """Stand-in for the object ``numpy.core.multiarray._reconstruct`` returns; BUILD fills it."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("malformed numpy array state")
        _version, shape, dtype, is_fortran, raw = state
        shape = _int_tuple(shape, "shape")
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("numpy array with an unsupported dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise ForbiddenGlobal("numpy.ndarray", "object arrays are not allowed")
        np_dtype = dtype.to_numpy()
        count = int(np.prod(shape)) if shape else 1
        if len(raw) != count * np_dtype.itemsize:
            raise pickle.UnpicklingError("numpy array has the wrong number of bytes")
        arr = np.frombuffer(bytes(raw), dtype=np_dtype, count=count)
        self.array = arr.reshape(shape, order="F" if is_fortran else "C").copy()

    def __repr__(self) -> str:
        return f"_NDArray({self.array!r})"


def _np_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> _NDArray:
    if cls is not _NDArrayType:
        raise ForbiddenGlobal("numpy.core.multiarray._reconstruct", "only numpy.ndarray may be rebuilt")
    return _NDArray()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``; protocol-2 pickles spell bytes as ``encode(s, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ForbiddenGlobal("_codecs.encode", "only latin1 text is decoded")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NDArrayType,
    ("_codecs", "encode"): _codecs_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the allowlisted globals, to local stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a network pickle")


def safe_load(file: BinaryIO, limits: PickleLimits = PickleLimits()) -> Any:
    """Unpickle ``file`` (seekable) with :class:`SafeUnpickler`, after
    :func:`~engine.synthesis.pickle_scan.scan_pickle` has bounded it. Raises
    ``pickle.UnpicklingError`` subclasses (:class:`PickleLimitError`, :class:`ForbiddenGlobal`,
    :class:`UnknownPersistentClass`) or whatever a damaged stream makes ``pickle`` raise
    (``EOFError``, ``ValueError``, ...)."""
    start = file.tell()
    end = file.seek(0, io.SEEK_END)
    file.seek(start)
    scan_pickle(file, end, limits)
    file.seek(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation chatter
        return SafeUnpickler(file).load()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
