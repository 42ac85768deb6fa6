"""The sound VAE: model, training, checkpoints and generation.

Pipeline: :mod:`.config` (dataclasses, presets) -> :mod:`.model` (VAE, loss) -> :mod:`.train`
(event generator) -> :mod:`.checkpoint` (safetensors + JSON) -> :mod:`.generate` (encode, decode,
sample, interpolate, sound) -> :mod:`.latents` (exploration statistics) -> :mod:`.evaluate`.
"""

from .checkpoint import Checkpoint, CheckpointError, find_checkpoints, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig, model_config, train_config
from .generate import analyse, decode, encode, interpolate, reconstruct, reconstruct_audio, sample, to_wave
from .latents import LatentStats, load_latent_stats
from .losses import spectral_loss, vae_loss
from .model import VAE
from .train import TrainEvent, TrainingError, pick_device, train

__all__ = [
    "VAE", "Checkpoint", "CheckpointError", "LatentStats", "ModelConfig", "TrainConfig", "TrainEvent",
    "TrainingError", "analyse", "decode", "encode", "find_checkpoints", "interpolate", "load_checkpoint",
    "load_latent_stats", "model_config", "pick_device", "reconstruct", "reconstruct_audio", "sample",
    "save_checkpoint", "spectral_loss", "to_wave", "train", "train_config", "vae_loss",
]
