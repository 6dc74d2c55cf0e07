"""Hostile and corrupt checkpoints against the readers: limit hit, exit code, time, peak memory.

Each case is built here, byte by byte (no file is downloaded or shipped), and given to
``python -m engine.generate --generator FILE --seeds 0`` in its own process, as a user or the
server would load it. Every case must end in one line naming the file and the limit it hit,
exit status 2, no traceback, in seconds and without a large allocation.

    python -m benchmarks.hostile                 # all cases, ~1 min; JSON in benchmarks/results/
    python -m benchmarks.hostile --case deep_keys_1m --case fifo
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

from benchmarks.common import REPO_ROOT, environment

__all__ = ["CASES", "build", "run_case"]

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "hostile.json"

# -- a tiny pickle assembler ----------------------------------------------------------------------
PROTO4, STOP, MARK, MEMOIZE = b"\x80\x04", b".", b"(", b"\x94"
EMPTY_DICT, EMPTY_LIST, SETITEMS, SETITEM, TUPLE, TUPLE1, TUPLE2 = b"}", b"]", b"u", b"s", b"t", b"\x85", b"\x86"
REDUCE, NONE, BINPERSID, POP = b"R", b"N", b"Q", b"0"


def s(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw          # SHORT_BINUNICODE


def get(i: int) -> bytes:
    return b"h" + bytes([i]) if i < 256 else b"j" + i.to_bytes(4, "little")


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def long1(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


# -- the cases --------------------------------------------------------------------------------------

def deep_keys(n: int) -> bytes:
    """A dict whose key is a tuple nested ``n`` deep."""
    return PROTO4 + EMPTY_DICT + NONE + TUPLE1 * n + NONE + SETITEM + STOP


def deep_marks(n: int) -> bytes:
    """Tuples nested ``n`` deep through MARK ... TUPLE."""
    return PROTO4 + MARK * n + TUPLE * n + STOP


def laughs(levels: int = 40) -> bytes:
    """Each level a tuple of the previous level twice (memo references): 2^levels leaves."""
    out = PROTO4 + EMPTY_LIST + MEMOIZE
    for i in range(levels):
        out += get(i) + get(i) + TUPLE2 + MEMOIZE
    return out + STOP


def persistent_tree(levels: int = 30) -> bytes:
    """An NVlabs-style network pickle whose every layer holds the layer below twice (the walk that
    flattens the module tree sees 2^levels layers in a few KB)."""
    def layer(cls: str, modules: bytes) -> bytes:
        meta = (EMPTY_DICT + MARK + s("type") + s("class") + s("class_name") + s(cls) + s("version") + NONE
                + s("state") + EMPTY_DICT + MARK + s("_modules") + EMPTY_DICT + modules + SETITEMS + SETITEMS)
        return get(0) + meta + TUPLE1 + REDUCE

    out = PROTO4 + EMPTY_DICT + s("G_ema")
    out += glob("torch_utils.persistence", "_reconstruct_persistent_obj") + MEMOIZE + POP        # memo 0
    out += layer("SynthesisLayer", b"") + MEMOIZE + POP                                        # memo 1
    for i in range(1, levels):                                                                 # memo i + 1
        out += layer("SynthesisBlock", MARK + s("a") + get(i) + s("b") + get(i) + SETITEMS) + MEMOIZE + POP
    out += layer("Generator", MARK + s("synthesis") + get(levels) + SETITEMS)
    return out + SETITEM + STOP


def length_bomb() -> bytes:
    """A bytes object that claims 2^60 bytes."""
    return PROTO4 + b"\x8e" + (1 << 60).to_bytes(8, "little") + b"xx" + STOP


def storage_bomb_pkl() -> bytes:
    """The ``data.pkl`` of a torch file whose one storage declares 10^15 elements."""
    pid = MARK + s("storage") + glob("torch", "FloatStorage") + s("0") + s("cpu") + long1(10**15) + TUPLE
    return PROTO4 + pid + BINPERSID + STOP


def torch_zip(data_pkl: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("archive/data.pkl", data_pkl)
            zf.writestr("archive/byteorder", "little")
            zf.writestr("archive/version", "3\n")
    return write


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


#: name -> (file name, writer, the phrase the one-line error must contain)
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "deep_keys_1m": ("deep_keys_1m.pkl", _bytes(deep_keys(1_000_000)), "nests deeper than"),
    "deep_keys_100k": ("deep_keys_100k.pkl", _bytes(deep_keys(100_000)), "nests deeper than"),
    "deep_marks_10k": ("deep_marks_10k.pkl", _bytes(deep_marks(10_000)), "nests deeper than"),
    "deep_keys_100k_zip": ("deep_keys_100k.pt", torch_zip(deep_keys(100_000)), "nests deeper than"),
    "laughs": ("laughs.pkl", _bytes(laughs()), "billion laughs"),
    "laughs_zip": ("laughs.pt", torch_zip(laughs()), "billion laughs"),
    "persistent_tree": ("persistent_tree.pkl", lambda p: p.write_bytes(persistent_tree()), "billion laughs"),
    "length_bomb": ("length_bomb.pkl", _bytes(length_bomb()), "length field claims"),
    "storage_bomb_zip": ("storage_bomb.pt", torch_zip(storage_bomb_pkl()), "declares a tensor storage"),
    "fifo": ("fifo.pkl", lambda p: os.mkfifo(p), "is a FIFO"),
    "directory": ("a_directory.pkl", lambda p: p.mkdir(), "is a directory"),
}
#: cases on files that exist already
DEVICE_CASES = {"dev_urandom": ("/dev/urandom", "is a device")}


def build(name: str, folder: Path) -> tuple[Path, str]:
    """Write case ``name`` into ``folder``; returns (its path, the phrase its error must contain)."""
    if name in DEVICE_CASES:
        path, phrase = DEVICE_CASES[name]
        return Path(path), phrase
    file_name, write, phrase = CASES[name]
    path = folder / file_name
    write(path)
    return path, phrase


def run_case(path: Path, timeout: float = 60.0) -> dict:
    """``python -m engine.generate --generator PATH --seeds 0`` in a child: status, stderr, time,
    peak RSS (MiB, from the child's own rusage)."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "engine.generate", "--generator", str(path), "--seeds", "0", "--out", out]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=out)
        err: list[bytes] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        reader.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(5)
        seconds = time.monotonic() - t0
    text = (err[0] if err else b"").decode(errors="replace")
    return {"exit": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "stderr": text.strip(), "stderr_lines": len(text.strip().splitlines()), "traceback": "Traceback" in text}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=[*CASES, *DEVICE_CASES], help="run only these (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a case is killed (default 60)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default benchmarks/results/hostile.json)")
    args = ap.parse_args(argv)
    names = args.case or [*CASES, *DEVICE_CASES]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            path, phrase = build(name, Path(folder))
            size = path.stat().st_size if path.is_file() else None
            r = run_case(path, args.timeout)
            ok = r["exit"] == 2 and r["stderr_lines"] == 1 and not r["traceback"] and phrase in r["stderr"]
            rows.append({"case": name, "bytes": size, "expect": phrase, "ok": ok, **r})
            print(f"{name:<20} {'ok ' if ok else 'BAD'} exit {r['exit']:>3}  {r['seconds']:6.2f} s  "
                  f"{r['peak_rss_mib']:7.1f} MiB  {r['stderr'][:110]}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch
    args.out.write_text(json.dumps({"benchmark": "hostile", "environment": environment(torch.device("cpu")),
                                    "cases": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
