"""Audio -> normalised log-spectrogram dataset stores, and spectrograms back to audio.

Pipeline: :mod:`.audio` (read, mono, resample, window) -> :mod:`.spectrogram` (STFT dB,
normalise, invert) -> :mod:`.labels` (label, split) -> :mod:`.store` (one directory on disk).
"""

from .audio import AUDIO_EXTENSIONS, AudioError, load_audio, save_wav, windows
from .config import PRESETS, ConfigError, SpectrogramConfig, preset
from .spectrogram import denormalise, log_spectrogram, normalise, to_audio
from .store import PreprocessError, Store, StoreSummary, build_store

__all__ = [
    "AUDIO_EXTENSIONS",
    "PRESETS",
    "AudioError",
    "ConfigError",
    "PreprocessError",
    "SpectrogramConfig",
    "Store",
    "StoreSummary",
    "build_store",
    "denormalise",
    "load_audio",
    "log_spectrogram",
    "normalise",
    "preset",
    "save_wav",
    "to_audio",
    "windows",
]
