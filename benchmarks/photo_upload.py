"""The page's photo upload against a real ``python -m engine.serve`` process: what a live stream's
frame rate does while its own photo (scikit-image's astronaut, from the installed package) is
aligned and inverted on the server, how long the inversion takes, and the progress messages.

One aiortc client streams speech-like audio; after a quiet baseline it POSTs the photo to
``/photo`` with its session id and keeps streaming until the server says the identity changed.

    python -m benchmarks.photo_upload                       # JSON in benchmarks/results/photo_upload.json
    python -m benchmarks.photo_upload --server-args --photo-steps 300
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks.common import REPO_ROOT, environment, serve_process
from benchmarks.soak import SoakClient, proc_sample
from streaming.ice import loopback_candidates

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "photo_upload.json"


def _astronaut_png() -> bytes:
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    return buf.getvalue()


async def run(args) -> dict:
    report: dict = {"benchmark": "photo_upload", "server_args": args.server_args}
    async with serve_process(args.server_args, args.out.with_suffix(".server.log")) as (url, proc):
        with loopback_candidates():
            client = SoakClient(url, 3600)
            if await client.connect() != 200:
                raise RuntimeError("the streaming client was refused")
            await asyncio.sleep(5 + args.baseline)
            report["baseline_fps"] = round(client.fps(args.baseline) or 0.0, 2)
            t0, n0 = time.monotonic(), len(client.times)
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/photo", data=_astronaut_png(), timeout=aiohttp.ClientTimeout(total=60),
                                     headers={"Content-Type": "image/png", "X-Session-Id": client.session_id}) as r:
                    report["upload_status"], report["upload_answer"] = r.status, await r.json()
            answered = time.monotonic() - t0
            done = None
            while done is None and time.monotonic() - t0 < args.timeout:
                done = next((m for m in client.messages if m.get("type") == "identity" and m.get("photo")), None)
                failed = next((m for m in client.messages if m.get("type") == "error"), None)
                if failed is not None:
                    raise RuntimeError(f"the server said: {failed['error']}")
                await asyncio.sleep(0.05)
            if done is None:
                raise RuntimeError(f"no new identity within {args.timeout} s")
            seconds = time.monotonic() - t0
            report["during"] = {"seconds": round(seconds, 1), "answer_s": round(answered, 3),
                                "fps": round((len(client.times) - n0) / seconds, 2),
                                "progress_messages": sum(m.get("type") == "photo" for m in client.messages),
                                "server": proc_sample(proc.pid)}
            report["identity_message"] = done
            await asyncio.sleep(args.baseline)
            report["after_fps"] = round(client.fps(args.baseline) or 0.0, 2)
            await client.close()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.photo_upload", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=float, default=10.0, help="seconds of quiet streaming before and after")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on the inversion after this long")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                    help="the rest goes to python -m engine.serve")
    args = ap.parse_args(argv)
    import torch

    report = asyncio.run(run(args))
    report["environment"] = environment(torch.device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report.get(k) for k in ("baseline_fps", "during", "after_fps", "identity_message")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
