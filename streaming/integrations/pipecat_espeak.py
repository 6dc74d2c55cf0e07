"""A Pipecat TTS service on espeak-ng: offline speech with no model to download (robotic, but
real phonemes, so the avatar's lips have something to follow). For local bots and tests; any
pipecat TTS service (Cartesia, Piper, Kokoro, ...) takes its place unchanged.

    tts = EspeakTTSService(voice="en-us", rate_wpm=170)
"""
from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from typing import AsyncGenerator, AsyncIterator, Optional

from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.tts_service import TTSService, TTSSettings

__all__ = ["EspeakTTSService"]


@dataclass
class EspeakTTSSettings(TTSSettings):
    """espeak-ng's voice (``espeak-ng --voices``) in ``voice``."""


class EspeakTTSService(TTSService):
    """Text → espeak-ng (a subprocess per utterance, WAV on stdout) → ``TTSAudioRawFrame``s at the
    pipeline's output rate; TTSStarted/TTSStopped frames around each utterance.

    Args:
        voice: an espeak-ng voice ("en-us", "en-029", "de", ...).
        rate_wpm: speaking rate in words per minute (80..450).
        executable: the espeak-ng binary (default: found on PATH).
    """

    Settings = EspeakTTSSettings

    def __init__(self, *, voice: str = "en-us", rate_wpm: int = 170, executable: Optional[str] = None, **kwargs):
        exe = executable or shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
        if not 80 <= int(rate_wpm) <= 450:
            raise ValueError(f"rate_wpm must be in [80, 450], got {rate_wpm!r}")
        super().__init__(push_start_frame=True, push_stop_frames=True,
                         settings=self.Settings(model=None, voice=voice, language=None), **kwargs)
        self._exe, self._rate_wpm = exe, int(rate_wpm)

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        proc = await asyncio.create_subprocess_exec(
            self._exe, "--stdout", "-v", str(self._settings.voice), "-s", str(self._rate_wpm), "--", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

        async def wav() -> AsyncIterator[bytes]:
            while chunk := await proc.stdout.read(8192):
                yield chunk

        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(wav(), strip_wav_header=True,
                                                                       context_id=context_id):
                await self.stop_ttfb_metrics()
                yield frame
            err = (await proc.stderr.read()).decode(errors="replace").strip()
            if await proc.wait() != 0:
                yield ErrorFrame(error=f"espeak-ng failed ({proc.returncode}): {err[:200]}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await self.stop_ttfb_metrics()
