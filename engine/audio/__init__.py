"""Audio front end: PCM at any rate → 16 kHz mono float32 → log-mel + VAD per video frame."""
from .features import (
                       HOP_LENGTH,
                       LOG_FLOOR,
                       N_MELS,
                       WIN_LENGTH,
                       FeatureStream,
                       FrameFeatures,
                       LogMel,
                       log_mel,
                       mel_filterbank,
)
from .input import SAMPLE_RATE, AudioInput

__all__ = ["SAMPLE_RATE", "AudioInput", "FeatureStream", "FrameFeatures", "LogMel", "log_mel",
           "mel_filterbank", "LOG_FLOOR", "N_MELS", "HOP_LENGTH", "WIN_LENGTH"]
