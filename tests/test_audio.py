"""Reading, checking and cutting audio (preprocessing.audio)."""

import math

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, tone, write_wav

from preprocessing.audio import AudioError, fit_length, is_silent, load_audio, peak, save_wav, windows


def test_load_mixes_to_mono_and_resamples(tmp_path):
    left, right = tone(440, dur=0.5, sr=16000), np.zeros(8000, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave = load_audio(path, SR)
    assert wave.dtype == np.float32 and wave.shape == (4000,)
    assert 0.2 < np.abs(wave).max() < 0.3  # mean of the two channels: half the tone's 0.5 amplitude


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("empty.wav", b"", "empty file"),
    ("garbage.wav", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)), "not readable as audio"),
    ("text.wav", b"this is not audio at all\n", "not readable as audio"),
    ("notes.txt", b"hello", "unsupported format '.txt'"),
    ("noext", b"RIFF", "unsupported format '(no extension)'"),
])
def test_bad_files_raise_audio_error_naming_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError) as e:
        load_audio(path, SR)
    assert reason in e.value.reason
    assert name in str(e.value) and e.value.path == str(path)
    assert str(e.value) == f"{path}: {e.value.reason}"


def test_reasons_say_exactly_what_is_wrong(tmp_path, monkeypatch):
    def reason(path, **kw):
        with pytest.raises(AudioError) as e:
            load_audio(path, SR, **kw)
        assert e.value.path == str(path)
        return e.value.reason

    (tmp_path / "empty.wav").write_bytes(b"")
    assert reason(tmp_path / "empty.wav") == "empty file (0 bytes)"
    (tmp_path / "text.wav").write_text("this is not audio at all\n")
    # soundfile's own explanation is passed on
    assert reason(tmp_path / "text.wav") == (f"not readable as audio (Error opening {str(tmp_path / 'text.wav')!r}: "
                                             "Format not recognised.)")
    sf.write(str(tmp_path / "header_only.wav"), np.zeros(0, np.float32), SR)  # a valid WAV of 0 frames
    assert reason(tmp_path / "header_only.wav") == "contains no samples"
    bad = tone(300)
    bad[5] = np.nan
    assert reason(write_wav(tmp_path / "nan.wav", bad, subtype="FLOAT")) == "contains NaN or infinite samples"
    short = write_wav(tmp_path / "short.wav", tone(300)[:40])
    assert reason(short, min_samples=64) == "too short: 0.005s, less than one STFT frame (64 samples at 8000 Hz)"

    def fails_silently(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(sf, "read", fails_silently)  # an error without a message: its type is named instead
    assert reason(short) == "not readable as audio (RuntimeError)"


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="cannot read file"):
        load_audio(tmp_path / "gone.wav", SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_rejected(tmp_path, bad):
    wave = tone(300)
    wave[100] = bad
    path = write_wav(tmp_path / "bad.wav", wave, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path, SR)


def test_too_short(tmp_path):
    path = write_wav(tmp_path / "short.wav", tone(300)[:30])
    assert len(load_audio(path, SR, min_samples=30)) == 30
    with pytest.raises(AudioError, match="too short"):
        load_audio(path, SR, min_samples=64)


def test_silence_threshold():
    assert is_silent(np.zeros(100)) and is_silent(np.full(100, 5e-5))
    assert not is_silent(tone(100, amp=0.01))
    assert not is_silent(np.array([0.0, -1e-4]))  # exactly -80 dBFS is not silent
    assert peak(np.array([0.2, -0.7, 0.5])) == pytest.approx(0.7)
    assert peak(np.zeros(0)) == 0.0 and is_silent(np.zeros(0))


def test_fit_length_crops_and_pads():
    x = np.arange(5, dtype=np.float32)
    assert fit_length(x, 3).tolist() == [0, 1, 2]
    assert fit_length(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]


def test_windows_all_and_first():
    x = np.arange(1000, dtype=np.float32)
    wins = windows(x, 300, "all")  # 3.33 windows -> 3 (the 100-sample tail is under half a window)
    assert [o for o, _ in wins] == [0, 300, 600]
    assert all(w.shape == (300,) for _, w in wins)
    np.testing.assert_array_equal(wins[1][1], x[300:600])
    wins = windows(x, 400, "all")  # 2.5 windows -> 3, the last zero-padded
    assert len(wins) == 3 and wins[2][1][199] == 999 and wins[2][1][200] == 0
    assert [o for o, _ in windows(x, 300, "first")] == [0]
    (_, short), = windows(x[:10], 300, "all")
    assert short.shape == (300,) and short[10:].max() == 0
    (_, head), = windows(x[:420], 300, "all")  # 1.4 windows: the tail is under half a window
    np.testing.assert_array_equal(head, x[:300])


def test_save_wav_clips_and_round_trips(tmp_path):
    wave = np.array([0.0, 0.5, -0.5, 2.0, np.nan], np.float32)
    path = save_wav(tmp_path / "sub" / "x.wav", wave, SR)
    back, sr = sf.read(str(path), dtype="float32")
    assert sr == SR and sf.info(str(path)).subtype == "PCM_16"
    np.testing.assert_allclose(back, [0.0, 0.5, -0.5, 1.0, 0.0], atol=1e-4)


def test_audio_error_keeps_the_path_and_reason(tmp_path):
    path = tmp_path / "gone.wav"
    with pytest.raises(AudioError) as e:
        load_audio(path, SR)
    assert e.value.path == str(path)
    assert str(e.value).startswith(f"{path}: cannot read file (")
    assert e.value.reason == "cannot read file (No such file or directory)"


def test_unsupported_format_lists_the_supported_ones(tmp_path):
    path = tmp_path / "clip.mid"
    path.write_bytes(b"MThd")
    supported = r"\.wav, \.flac, \.ogg, \.mp3, \.aiff, \.aif"
    with pytest.raises(AudioError, match=rf"unsupported format '\.mid'; use one of {supported}$"):
        load_audio(path, SR)


def test_one_sample_is_enough_by_default(tmp_path):
    path = write_wav(tmp_path / "one.wav", np.array([0.25], np.float32), subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, SR), [0.25])


def test_save_wav_makes_folders_and_writes_next_to_other_files(tmp_path):
    save_wav(tmp_path / "a" / "b" / "one.wav", np.full(10, -2.0, np.float32), SR)
    save_wav(tmp_path / "a" / "b" / "two.wav", np.zeros(10, np.float32), SR)
    back, _ = sf.read(str(tmp_path / "a" / "b" / "one.wav"), dtype="float32")
    np.testing.assert_allclose(back, -1.0)  # clipped at full scale
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["one.wav", "two.wav"]


@pytest.mark.parametrize(("orig", "new"), [(7919, 8000), (8000, 16001), (44101, 22050), (1001, 191999)])
def test_awkward_sample_rates_resample_with_a_bounded_kernel(orig, new):
    """A file whose rate is coprime with the model's once asked torchaudio for a sinc kernel of gigabytes
    (#12: every size from a file is bounded): the rates are rounded by a hair, the length and pitch kept."""
    from preprocessing.audio import _resampler, resample, tractable_rates

    o, n = tractable_rates(orig, new)
    assert abs((n / o) / (new / orig) - 1) < 2e-3  # below 0.1% from 8 kHz up; 1001 Hz is the worst case
    wave = np.sin(2 * np.pi * 440 * np.arange(orig) / orig).astype(np.float32)  # 1 s at 440 Hz
    out = resample(wave, orig, new)
    assert len(out) == math.ceil(orig * new / orig)
    assert _resampler(o, n).kernel.numel() <= 1_000_000  # 4 MB; 7919 -> 8000 as given: 8000 x 1 x 7,900+
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * new / len(out)
    assert peak_hz == pytest.approx(440, abs=1.5)
