"""Configuration limits, messages and presets (preprocessing.config, vae.config)."""

import json
import re

import pytest

from preprocessing.config import ConfigError, SpectrogramConfig, preset
from vae.config import ModelConfig, TrainConfig, model_config, train_config


def _raises(match: str):
    """ConfigError whose whole message is ``match`` (the text a user reads)."""
    return pytest.raises(ConfigError, match=f"^{re.escape(match)}$")


# ---- SpectrogramConfig ----------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"sample_rate": 1000, "duration": 0.016, "n_fft": 16, "hop_length": 1},  # 1 kHz, the smallest frame, hop 1
    {"sample_rate": 192_000, "duration": 60.0, "n_fft": 16_384, "hop_length": 16_384, "griffinlim_iters": 1000},
    {"n_fft": 256, "hop_length": 256},  # hop as long as the frame
    {"duration": 0.032},  # exactly one frame: 256 samples at 8 kHz
    {"top_db": 0.5, "griffinlim_iters": 1},
])
def test_smallest_valid_spectrogram_parameters_are_accepted(changes):
    cfg = SpectrogramConfig().replace(**changes)
    assert all(getattr(cfg, k) == v for k, v in changes.items())


@pytest.mark.parametrize(("changes", "message"), [
    ({"sample_rate": 0}, "sample_rate must be a whole number from 1000 to 192000, got 0"),
    ({"sample_rate": 10_000_000}, "sample_rate must be a whole number from 1000 to 192000, got 10000000"),
    ({"sample_rate": 8000.5}, "sample_rate must be a whole number from 1000 to 192000, got 8000.5"),
    ({"duration": 0.0}, "duration must be above 0.0 and at most 60.0, got 0.0"),
    ({"duration": float("inf")}, "duration must be above 0.0 and at most 60.0, got inf"),
    ({"duration": float("nan")}, "duration must be above 0.0 and at most 60.0, got nan"),
    ({"duration": 100_000.0}, "duration must be above 0.0 and at most 60.0, got 100000.0"),
    ({"n_fft": 15, "hop_length": 4}, "n_fft must be a whole number from 16 to 16384, got 15"),
    ({"hop_length": 0}, "hop_length must be a whole number from 1 to 16384, got 0"),
    ({"sample_rate": 192_000, "duration": 60.0, "hop_length": 1},
     "one clip would be a 128 x 11520001 spectrogram (5625 MiB); the limit is 64 MiB a clip: use a shorter "
     "duration, a larger hop or a smaller frame"),
    ({"ref_db": float("nan")}, "ref_db must be a finite number of dB, got nan"),
    ({"hop_length": 257}, "hop_length (257) must not exceed the frame n_fft (256)"),
    ({"duration": 0.0318}, "duration 0.0318s gives 254 samples, fewer than one STFT frame (256); "
                           "use a longer duration or a smaller frame"),
    ({"normalisation": "peak"}, "normalisation must be one of ('global', 'clip'), got 'peak'"),
    ({"windowing": "middle"}, "windowing must be one of ('all', 'first'), got 'middle'"),
    ({"phase": "random"}, "phase must be one of ('griffinlim', 'zero'), got 'random'"),
    ({"top_db": -1.0}, "top_db must be above 0.0 and at most 200.0, got -1.0"),
    ({"griffinlim_iters": 0}, "griffinlim_iters must be a whole number from 1 to 1000, got 0"),
    ({"griffinlim_iters": 10**9}, "griffinlim_iters must be a whole number from 1 to 1000, got 1000000000"),
])
def test_spectrogram_parameter_messages(changes, message):
    with _raises(message):
        SpectrogramConfig().replace(**changes)


def test_spectrogram_replace_ignores_none_and_validates():
    cfg = SpectrogramConfig().replace(hop_length=None, n_fft=512, phase=None)
    assert cfg == SpectrogramConfig(n_fft=512)
    with _raises("unknown spectrogram parameters: ['bogus', 'extra']"):
        SpectrogramConfig.from_dict({**cfg.to_dict(), "extra": 1, "bogus": 2})
    with _raises("hop_length must be a whole number from 1 to 16384, got 0"):
        SpectrogramConfig.from_dict({**cfg.to_dict(), "hop_length": 0})


def test_unknown_preset_lists_the_presets():
    with _raises("unknown preset 'nope'; choose one of ['digits', 'music', 'study', 'study-digits', 'study-music']"):
        preset("nope")


# ---- ModelConfig and the architecture presets -----------------------------------------------------

def _small(**kw) -> ModelConfig:
    """8x8 spectrograms through three 2x2 strides: exactly divisible, nothing to spare."""
    return ModelConfig(**{"n_freq": 8, "n_frames": 8, "channels": (4, 8, 16), "strides": ((2, 2),) * 3,
                          "decoder_channels": (8, 4), "latent_dim": 1, **kw})


def test_smallest_valid_model_config():
    for activation in ("relu", "leaky_relu"):
        cfg = _small(activation=activation)
        assert cfg.validate() is cfg and cfg.bottleneck == (16, 1, 1)


UNEQUAL = "channels and strides must be non-empty and of equal length"
ADJUST = "adjust duration/hop (n_frames = 1 + duration*sample_rate // hop) or n_fft"


@pytest.mark.parametrize(("kw", "message"), [
    ({"latent_dim": 0}, "latent_dim must be at least 1, got 0"),
    ({"channels": (), "strides": (), "decoder_channels": ()}, UNEQUAL),
    ({"channels": (4, 8)}, UNEQUAL),
    ({"decoder_channels": (8,)}, "decoder_channels must have one entry fewer than channels"),
    ({"decoder_channels": (8, 4, 2)}, "decoder_channels must have one entry fewer than channels"),
    ({"activation": "gelu"}, "activation must be 'relu' or 'leaky_relu', got 'gelu'"),
    ({"n_freq": 12}, "spectrogram 12x8 cannot be mirrored by strides [(2, 2), (2, 2), (2, 2)]: n_freq must divide "
                     f"by 8 and n_frames by 8; {ADJUST}"),
    ({"n_frames": 6, "strides": ((2, 1), (2, 2), (2, 2))},
     "spectrogram 8x6 cannot be mirrored by strides [(2, 1), (2, 2), (2, 2)]: n_freq must divide "
     f"by 8 and n_frames by 4; {ADJUST}"),
])
def test_model_config_messages(kw, message):
    with _raises(message):
        _small(**kw).validate()


def test_model_config_survives_json():
    """Checkpoints store the config as JSON (lists); it comes back as the same (tuple) config."""
    cfg = model_config("default", (32, 64), latent_dim=5)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_study_architecture():
    assert model_config("study", (256, 64)) == ModelConfig(
        n_freq=256, n_frames=64, channels=(512, 256, 128, 64, 32),
        strides=((2, 2), (2, 2), (2, 2), (2, 2), (2, 1)), decoder_channels=(32, 64, 128, 256),
        latent_dim=128, activation="relu", norm_first=False)


@pytest.mark.parametrize(("shape", "strides"), [
    ((128, 96), ((2, 2),) * 4),  # both axes halve to 8 and 6
    ((32, 64), ((2, 2), (2, 2), (1, 2))),  # frequency reaches 8 first and stays
    ((128, 32), ((2, 2), (2, 2), (2, 1), (2, 1))),  # time reaches 8 first and stays
    ((512, 256), ((2, 2),) * 5 + ((2, 1),)),  # six blocks: the filters stop doubling at 256
    ((36, 20), ((2, 2), (2, 2))),  # 9x5: an odd axis above 8 cannot halve, so halving stops
])
def test_default_architecture_halves_each_axis_down_to_8(shape, strides):
    channels = (32, 64, 128, 256, 256, 256)[:len(strides)]
    assert model_config("default", shape) == ModelConfig(
        n_freq=shape[0], n_frames=shape[1], channels=channels, strides=strides,
        decoder_channels=tuple(reversed(channels[:-1])), latent_dim=64, activation="leaky_relu", norm_first=True)


def test_architecture_messages():
    with _raises("spectrogram 8x8 is too small or odd-sized for the default architecture"):
        model_config("default", (8, 8))
    with _raises("unknown architecture 'transformer'; choose one of ('default', 'study', 'temporal')"):
        model_config("transformer", (128, 96))


# ---- TrainConfig ----------------------------------------------------------------------------------

def test_smallest_valid_train_config():
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1e-9, recon_weight=0.5, kl_weight=0.0).validate()
    assert (cfg.epochs, cfg.batch_size) == (1, 1)
    assert TrainConfig(kl_weight=0.5).validate().kl_weight == 0.5


@pytest.mark.parametrize(("changes", "message"), [
    ({"epochs": 0}, "epochs must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"lr": 0.0}, "lr must be positive, got 0.0"),
    ({"recon_weight": 0.0}, "recon_weight must be positive and kl_weight non-negative"),
    ({"kl_weight": -0.1}, "recon_weight must be positive and kl_weight non-negative"),
])
def test_train_config_messages(changes, message):
    with _raises(message):
        TrainConfig().replace(**changes)


def test_train_config_replace_ignores_none():
    assert TrainConfig().replace(epochs=None, lr=0.01, seed=None) == TrainConfig(lr=0.01)


def test_training_presets():
    assert train_config("study", (256, 64)) == TrainConfig(
        epochs=150, batch_size=64, lr=5e-4, recon_weight=1e6, kl_weight=1.0, kl_warmup_epochs=0, grad_clip=0.0)
    assert train_config("default", (32, 64)) == TrainConfig(recon_weight=10.0 * 32 * 64)


# --- one dict round trip for every config dataclass --------------------------------------------------


@pytest.mark.parametrize(("cls", "what"), [(SpectrogramConfig, "spectrogram"), (ModelConfig, "model"),
                                           (TrainConfig, "training")])
def test_unknown_keys_are_named_for_every_config(cls, what):
    d = cls().to_dict()
    with _raises(f"unknown {what} parameters: ['bogus', 'zz']"):
        cls.from_dict({**d, "zz": 1, "bogus": 2})
    with _raises(f"unknown {what} parameters: ['bogus']"):
        cls().replace(bogus=1)
    with _raises(f"{what} parameters must be a dict, got str"):
        cls.from_dict("not a dict")
    assert cls.from_dict(json.loads(json.dumps(d))) == cls()  # JSON lists come back as tuples


def test_model_config_needs_every_key():
    """A default standing in for a missing architecture key would build another network."""
    d = model_config("default", (32, 64)).to_dict()
    del d["latent_dim"], d["channels"]
    with _raises("missing model parameters: ['channels', 'latent_dim']"):
        ModelConfig.from_dict(d)
    assert TrainConfig.from_dict({"epochs": 3}) == TrainConfig(epochs=3)  # the others default
    assert SpectrogramConfig.from_dict({"n_fft": 512}) == SpectrogramConfig(n_fft=512)


def test_tuples_come_back_nested():
    cfg = ModelConfig.from_dict({**ModelConfig().to_dict(), "strides": [[2, 2], [2, 2], [2, 2], [2, 2]],
                                 "channels": [8, 8, 8, 8], "decoder_channels": [8, 8, 8]})
    assert cfg.strides == ((2, 2),) * 4 and cfg.channels == (8,) * 4 and cfg.decoder_channels == (8,) * 3
    assert hash(cfg)  # frozen and all tuples: hashable


def test_enumerated_fields_are_literals():
    import typing

    hints = typing.get_type_hints(SpectrogramConfig)
    assert typing.get_args(hints["normalisation"]) == ("global", "clip")
    assert typing.get_args(hints["windowing"]) == ("all", "first")
    assert typing.get_args(hints["phase"]) == ("griffinlim", "zero")
    assert typing.get_args(typing.get_type_hints(ModelConfig)["activation"]) == ("relu", "leaky_relu")
    assert typing.get_type_hints(TrainConfig)["device"] is str
    with _raises("activation must be 'relu' or 'leaky_relu', got 'gelu'"):
        ModelConfig(activation="gelu").validate()


@pytest.mark.parametrize("name", ["digits", "music"])
def test_shipped_checkpoint_configs_load(name):
    from conftest import ROOT

    config = json.loads((ROOT / "checkpoints" / name / "config.json").read_text())
    assert ModelConfig.from_dict(config["model"]).to_dict() == config["model"] | {
        "channels": tuple(config["model"]["channels"]), "decoder_channels": tuple(config["model"]["decoder_channels"]),
        "strides": tuple(tuple(s) for s in config["model"]["strides"])}
    assert SpectrogramConfig.from_dict(config["spectrogram"]).to_dict() == config["spectrogram"]
    assert TrainConfig.from_dict(config["training"]).to_dict() == config["training"]


def test_from_dict_restores_tuples_inside_optional_fields():
    """A field typed ``tuple[...] | None`` comes back from JSON lists as (nested) tuples, and None as None."""
    import dataclasses

    from preprocessing.config import DictConfig

    @dataclasses.dataclass(frozen=True)
    class Shapes(DictConfig):
        pairs: tuple[tuple[int, int], ...] | None = None

        def validate(self):
            return self

    assert Shapes.from_dict({"pairs": [[1, 2], [3, 4]]}).pairs == ((1, 2), (3, 4))
    assert Shapes.from_dict({"pairs": None}).pairs is None
    assert Shapes.from_dict(json.loads(json.dumps(Shapes(((5, 6),)).to_dict()))) == Shapes(((5, 6),))
