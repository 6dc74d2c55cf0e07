"""Audio front end: PCM at any rate → 16 kHz mono float32 → log-mel + VAD per video frame."""
from .features import (FeatureStream, FrameFeatures, LogMel, LOG_FLOOR, N_MELS, HOP_LENGTH, WIN_LENGTH,
                       log_mel, mel_filterbank)
from .input import SAMPLE_RATE, AudioInput

__all__ = ["SAMPLE_RATE", "AudioInput", "FeatureStream", "FrameFeatures", "LogMel", "log_mel",
           "mel_filterbank", "LOG_FLOOR", "N_MELS", "HOP_LENGTH", "WIN_LENGTH"]
