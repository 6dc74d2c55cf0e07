"""Bounding a pickle before anything in it is built: :func:`scan_pickle`.

A pickle is a program for a stack machine, and a hostile one can make the unpickler, or the code
that walks its result, crash or run for ever without calling a single forbidden global: tuples
nested a million deep (the C unpickler's result then overflows the C stack when it is hashed or
freed), "billion laughs" containers that reuse memo entries so a few kilobytes expand into 2^30
nodes for any recursive walk, length fields that claim terabytes. :func:`scan_pickle` runs the
opcodes with ``pickletools.genops`` (pure Python, one pass, nothing constructed) and simulates only
the *shape* of every value — its nesting depth and its node count as a tree walk would see it,
shared memo entries counted once per reference — and refuses, with :class:`PickleLimitError`
naming the limit, before a single object exists:

* ``max_depth`` (200): nesting of containers and calls (a real NVlabs network pickle: ~35);
* ``max_nodes``: the expanded tree (memo references counted every time they are used) may have at
  most ``max(min_nodes, node_factor × opcodes)`` nodes — a file without shared structure has
  about one node per opcode;
* ``max_stack`` / ``max_memo``: live stack entries and memo entries;
* every declared length (strings, bytes, frames) must fit in what is left of the file; the
  reader refuses the read before it allocates;
* ``deadline_s``: wall-clock budget for the scan.

After a successful scan the real unpickler may read the same bytes: its work and its result are
bounded by what was scanned.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import time
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["PickleLimits", "PickleLimitError", "ScanReport", "scan_pickle", "scan_torch_file", "BoundedReader"]


class PickleLimitError(pickle.UnpicklingError):
    """A pickle exceeds one of the :class:`PickleLimits`; the message names the limit."""


@dataclass(frozen=True)
class PickleLimits:
    max_depth: int = 200
    min_nodes: int = 1_000_000
    node_factor: int = 16
    max_stack: int = 1_000_000
    max_memo: int = 5_000_000
    deadline_s: float = 120.0


@dataclass(frozen=True)
class ScanReport:
    ops: int
    depth: int
    nodes: int
    memo: int
    end: int            # stream position after STOP


class BoundedReader(io.RawIOBase):
    """A read-only view of ``f`` from its current position to ``end`` that refuses any read asking
    for more than is left (so a length field cannot make the reader allocate it first)."""

    def __init__(self, f: BinaryIO, end: int) -> None:
        super().__init__()
        self._f = f
        self._end = int(end)

    def remaining(self) -> int:
        return self._end - self._f.tell()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = self.remaining()
        if n is None or n < 0:
            n = left
        if n > left:
            if n - left > 1 << 20:
                raise PickleLimitError(f"a length field claims {n} bytes where {max(left, 0)} are left in the file")
            n = max(left, 0)     # a short read: the parser reports the truncation
        return self._f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        left = self.remaining()
        return self._f.readline(left if limit is None or limit < 0 else min(limit, left))

    def tell(self) -> int:
        return self._f.tell()


class _Cell:
    """The shape of one value: nesting depth and expanded node count (mutable: APPEND & co grow it)."""

    __slots__ = ("depth", "nodes", "value", "items")

    def __init__(self, depth: int = 1, nodes: int = 1, value=None, items=None) -> None:
        self.depth = depth
        self.nodes = nodes
        self.value = value      # ints only (persistent ids declare storage sizes with them)
        self.items = items      # a small tuple's cells


_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}


def _check_storage_sizes(items: list, file_bytes: int, what: str) -> None:
    """A torch persistent id ``('storage', type, key, location, numel, ...)``: torch allocates
    ``numel`` elements before it reads them, so no int in it may exceed the file's size."""
    for c in items:
        if c.value is not None and c.value > file_bytes:
            raise PickleLimitError(f"{what} declares a tensor storage of {c.value} elements in a file of "
                                   f"{file_bytes} bytes")


def scan_pickle(f: BinaryIO, end: int, limits: PickleLimits = PickleLimits(), what: str = "pickle",
                storage_bytes: int | None = None) -> ScanReport:
    """Scan one pickle from ``f``'s position to its STOP (``end``: the end of the bytes it may use;
    ``storage_bytes``: the most bytes its tensor storages can have, default ``end``).
    Raises :class:`PickleLimitError` (a limit) or ``pickle.UnpicklingError`` (not a pickle)."""
    reader = BoundedReader(f, end)
    storage_bytes = end if storage_bytes is None else storage_bytes
    t_end = time.monotonic() + limits.deadline_s
    stack: list = []
    marks: list[int] = []
    memo: dict = {}
    ops = depth_max = 0
    cap = limits.min_nodes

    def check(cell: _Cell) -> _Cell:
        nonlocal depth_max, cap
        if cell.depth > limits.max_depth:
            raise PickleLimitError(f"{what} nests deeper than {limits.max_depth} levels")
        cap = max(limits.min_nodes, limits.node_factor * ops)
        if cell.nodes > cap:
            raise PickleLimitError(f"{what} expands to more than {cap} objects from {ops} opcodes (memo "
                                   "entries reused over and over: a 'billion laughs' bomb)")
        depth_max = max(depth_max, cell.depth)
        return cell

    def pop(n: int) -> list:
        if n > len(stack) - (marks[-1] if marks else 0):
            raise pickle.UnpicklingError(f"{what} is corrupt (stack underflow)")
        out = stack[len(stack) - n:] if n else []
        del stack[len(stack) - n:]
        return out

    def pop_mark() -> list:
        if not marks:
            raise pickle.UnpicklingError(f"{what} is corrupt (no mark)")
        i = marks.pop()
        out = stack[i:]
        del stack[i:]
        return out

    try:
        for op, arg, _pos in pickletools.genops(reader):
            ops += 1
            if not ops & 4095 and time.monotonic() > t_end:
                raise PickleLimitError(f"{what} took longer than {limits.deadline_s:g} s to scan")
            name = op.name
            if name == "STOP":
                root = pop(1)[0]
                break
            if name in ("PROTO", "FRAME"):
                continue
            if name == "MARK":
                marks.append(len(stack))
            elif name == "POP_MARK":
                pop_mark()
            elif name == "POP":
                pop(1)
            elif name == "DUP":
                stack.append(pop(1)[0])
                stack.append(stack[-1])
            elif name in _PUT or name == "MEMOIZE":
                if not stack or (marks and len(stack) == marks[-1]):
                    raise pickle.UnpicklingError(f"{what} is corrupt (memoize of an empty stack)")
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
                if len(memo) > limits.max_memo:
                    raise PickleLimitError(f"{what} has more than {limits.max_memo} memo entries")
            elif name in _GET:
                if arg not in memo:
                    raise pickle.UnpicklingError(f"{what} is corrupt (memo entry {arg} missing)")
                stack.append(memo[arg])
            elif name in _MUTATORS:
                if name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                    items = pop_mark()
                else:
                    items = pop(2 if name == "SETITEM" else 1)     # APPEND: the item; BUILD: the state
                target = pop(1)[0]
                if items:
                    target.depth = max(target.depth, 1 + max(c.depth for c in items))
                    target.nodes = min(target.nodes + sum(c.nodes for c in items), cap + 1)
                stack.append(check(target))
            else:
                before = op.stack_before
                if pickletools.markobject in before:        # LIST, TUPLE, DICT, FROZENSET, INST, OBJ
                    popped = pop_mark()
                    popped += pop(before.index(pickletools.markobject))
                else:
                    popped = pop(len(before))
                if name == "BINPERSID" and popped[0].items:
                    _check_storage_sizes(popped[0].items, storage_bytes, what)
                for _ in op.stack_after:
                    cell = _Cell(1 + max((c.depth for c in popped), default=0),
                                 min(1 + sum(c.nodes for c in popped), cap + 1))
                    if not before and isinstance(arg, int) and not isinstance(arg, bool):
                        cell.value = arg
                    elif name.startswith("TUPLE") and len(popped) <= 8:
                        cell.items = popped
                    stack.append(check(cell))
            if len(stack) + len(marks) > limits.max_stack:
                raise PickleLimitError(f"{what} keeps more than {limits.max_stack} values on its stack")
        else:
            raise pickle.UnpicklingError(f"{what} is truncated (no STOP)")
    except PickleLimitError:
        raise
    except pickle.UnpicklingError:
        raise
    except (ValueError, EOFError, OverflowError) as exc:   # genops on bytes that are not a pickle
        raise pickle.UnpicklingError(f"{what} is corrupt ({exc})") from None
    return ScanReport(ops=ops, depth=depth_max, nodes=root.nodes, memo=len(memo), end=reader.tell())


ZIP_MAGIC = b"PK\x03\x04"


def scan_torch_file(f: BinaryIO, size: int, limits: PickleLimits = PickleLimits(), what: str = "torch file") -> None:
    """Scan the pickles of a ``torch.save`` file before ``torch.load`` reads it: the ``data.pkl``
    of a zip archive, or the five pickles at the head of the legacy format (magic, protocol, system
    info, the object, the storage keys). Raises like :func:`scan_pickle`."""
    start = f.tell()
    head = f.read(4)
    f.seek(start)
    if head == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(f) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    raise pickle.UnpicklingError(f"{what} is a zip archive without data.pkl")
                info = zf.getinfo(names[0])
                if info.file_size > size * 1032 + (1 << 20):   # deflate's best ratio is ~1032:1
                    raise PickleLimitError(f"{what}: data.pkl claims {info.file_size} bytes unpacked")
                with zf.open(info) as member:
                    scan_pickle(member, info.file_size, limits, what, storage_bytes=size)
        except zipfile.BadZipFile as exc:
            raise pickle.UnpicklingError(f"{what} is a corrupt zip archive ({exc})") from None
        finally:
            f.seek(start)
        return
    try:
        for _ in range(5):
            scan_pickle(f, start + size, limits, what, storage_bytes=size)
    finally:
        f.seek(start)
