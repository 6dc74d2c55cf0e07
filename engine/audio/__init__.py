"""Audio front end: PCM at any rate → 16 kHz mono float32 → log-mel + VAD per video frame."""
from .input import SAMPLE_RATE, AudioInput

__all__ = ["SAMPLE_RATE", "AudioInput"]
