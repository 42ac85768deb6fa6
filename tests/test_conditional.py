"""Conditioning on labels (issue #14): config, model, batches, training, generation, CLI, classifier, bench."""

import dataclasses
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TRAIN_KW, tiny_model_cfg

from preprocessing.errors import InputError
from vae.checkpoint import load_checkpoint, load_config
from vae.cli import main
from vae.conditioning import label_index, label_indices
from vae.config import ModelConfig, model_config
from vae.generate import decode, encode, relabel, sample, start_code
from vae.latents import (
    SHRINK,
    LatentStatsError,
    label_gaussians,
    load_latent_stats,
    save_latent_stats,
)
from vae.model import VAE
from vae.train import TrainingError, condition_labels, split_batch, train

train_module = importlib.import_module("vae.train")  # `vae.train` the attribute is the function
ROOT = Path(__file__).resolve().parents[1]
LABELS = ("0", "1", "2")  # the tiny store's digits


@pytest.fixture(scope="module")
def cond_run(tiny_store, tmp_path_factory) -> Path:
    """A tiny global model conditioned on the tiny store's labels, trained 2 epochs."""
    out = tmp_path_factory.mktemp("runs") / "cond"
    events = list(train(tiny_store.path, out, model_cfg=tiny_model_cfg(), condition="label",
                        **{**TRAIN_KW, "epochs": 2}))
    assert events[-1].kind == "done"
    return out


# ----- config and model --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "music"])
def test_shipped_unconditional_configs_serialise_unchanged(name):
    written = json.loads((ROOT / "checkpoints" / name / "config.json").read_text())["model"]
    cfg = load_config(ROOT / "checkpoints" / name).model_cfg
    assert cfg.labels == () and json.loads(json.dumps(cfg.to_dict())) == written


def test_conditional_config_round_trips_its_vocabulary():
    cfg = dataclasses.replace(tiny_model_cfg(), labels=LABELS).validate()
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["labels"] == list(LABELS) and d["label_dim"] == 16 and d["label_encoder"] is True
    assert ModelConfig.from_dict(d) == cfg
    assert not {"labels", "label_dim", "label_encoder"} & set(tiny_model_cfg().to_dict())


@pytest.mark.parametrize("labels", [("a", "a"), ("",), ("x" * 201,)])
def test_bad_vocabularies_are_refused(labels):
    with pytest.raises(ValueError, match="labels"):
        dataclasses.replace(tiny_model_cfg(), labels=labels).validate()


@pytest.mark.parametrize("cfg", [tiny_model_cfg(), model_config("temporal", (32, 64))], ids=["global", "temporal"])
def test_decoder_uses_the_label(cfg):
    torch.manual_seed(0)
    plain = VAE(cfg)
    model = VAE(dataclasses.replace(cfg, labels=LABELS)).eval()
    assert set(model.state_dict()) - set(plain.state_dict()) == {"encoder.label.table.weight",
                                                                  "decoder.label.table.weight"}
    x = torch.rand(3, 1, 32, 64)  # (B, 1, F, T)
    y = torch.tensor([0, 1, 2])
    mu, logvar = model.encode(x, y)
    assert mu.shape == (3, *cfg.latent_shape) == logvar.shape
    z = torch.zeros(2, *cfg.latent_shape)
    a, b = model.decode(z, torch.tensor([0, 0])), model.decode(z, torch.tensor([0, 2]))
    assert a.shape == (2, 1, 32, 64)
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    assert model.decode(z).shape == a.shape  # no label: the mean embedding
    with pytest.raises(ValueError, match="labels must be"):
        model.decode(z, torch.tensor([0]))


def test_decoder_only_conditioning_leaves_the_encoder_as_it_was():
    cfg = dataclasses.replace(tiny_model_cfg(), labels=LABELS, label_encoder=False)
    keys = set(VAE(cfg).state_dict()) - set(VAE(tiny_model_cfg()).state_dict())
    assert keys == {"decoder.label.table.weight"}


# ----- vocabulary and batches --------------------------------------------------------------------------


def test_label_lookups_name_the_known_labels():
    assert label_index(LABELS, 2) == 2 and label_indices(LABELS, ["2", "0"]).tolist() == [2, 0]
    with pytest.raises(InputError, match="unknown label '9'; this model knows 0, 1, 2"):
        label_index(LABELS, "9")
    with pytest.raises(InputError, match="not conditioned on labels"):
        label_index((), "1")
    with pytest.raises(InputError, match=r"\(unlabelled\)"):
        label_indices(LABELS, ["0", None])


def test_condition_needs_every_clip_labelled(tiny_store):
    assert condition_labels(tiny_store, "label") == LABELS and condition_labels(tiny_store, None) == ()
    half = SimpleNamespace(clips=[{"label": "0"}, {"label": None}], labels=lambda: ["0"], path="s")
    half.__len__ = lambda: 2
    with pytest.raises(TrainingError, match="1 clips of s have no label"):
        condition_labels(half, "label")
    with pytest.raises(ValueError, match="unknown condition"):
        condition_labels(tiny_store, "speaker")


@pytest.mark.parametrize("preload", [True, False])
def test_batches_carry_the_labels_of_their_rows(tiny_store, monkeypatch, preload):
    if not preload:
        monkeypatch.setattr(train_module, "PRELOAD_BYTES", 0)  # read from the store, one batch ahead
    labels = label_indices(LABELS, [c["label"] for c in tiny_store.clips])
    idx = tiny_store.indices("train")
    plain = train_module._Batches(tiny_store, idx, 5)
    labelled = train_module._Batches(tiny_store, idx, 5, labels=labels)
    assert labelled.preloaded is preload
    rows = {tiny_store.rows[i].tobytes(): labels[i] for i in idx}
    n = 0
    for x, (x2, y) in zip(plain.epoch(0, 1), labelled.epoch(0, 1), strict=True):
        assert torch.equal(x, x2) and y.dtype == torch.long and y.shape == (len(x),)
        assert [rows[c[0].numpy().tobytes()] for c in x2] == y.tolist()
        n += len(y)
    assert n == len(idx)
    assert split_batch(x) == (x, None)


# ----- training, checkpoint, generation ----------------------------------------------------------------


def test_conditional_run_saves_its_vocabulary_and_resumes(cond_run, tiny_store):
    ck = load_checkpoint(cond_run)
    assert ck.model_cfg.labels == LABELS and ck.meta["condition"] == "label"
    assert json.loads((cond_run / "config.json").read_text())["model"]["labels"] == list(LABELS)
    assert (cond_run / "latents.safetensors").is_file()
    events = list(train(tiny_store.path, cond_run, resume=True, epochs=3, device="cpu"))
    assert events[-1].kind == "done" and load_config(cond_run / "last").meta["epoch"] == 3
    assert load_checkpoint(cond_run).model_cfg.labels == LABELS


def test_conditioning_cannot_be_added_on_resume(trained, tiny_store):
    with pytest.raises(TrainingError, match="cannot resume with --condition label"):
        list(train(tiny_store.path, trained[0], resume=True, condition="label", epochs=5, device="cpu"))


def test_generation_takes_a_label(cond_run, tiny_store):
    ck = load_checkpoint(cond_run)
    z = sample(ck, 2, seed=0)
    a, b = decode(ck, z, "0"), decode(ck, z, "2")
    assert a.shape == (2, 32, 64) and not torch.allclose(a, b)
    x = torch.from_numpy(np.asarray(tiny_store.rows[[0, 1]]))
    assert torch.allclose(relabel(ck, x, "0", "2"), decode(ck, encode(ck, x, "0")[0], "2"))
    with pytest.raises(InputError, match="unknown label '7'"):
        decode(ck, z, "7")


def test_label_gaussians_recover_each_labels_covariance():
    """Codes drawn from two known Gaussians: each label's factor gives back its (shrunk) covariance."""
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.0, 0.0, 0.3]])  # label "a": correlated axes
    codes = torch.cat([torch.randn(4000, 3, generator=g) @ a.T, 5 + 0.1 * torch.randn(4000, 3, generator=g)])
    labels = ["a"] * 4000 + ["b"] * 4000
    chol = label_gaussians(codes, labels, ["a", "b"])  # (2, 3, 3)
    want = a @ a.T
    want = (1 - SHRINK) * want + SHRINK * torch.diag(torch.diag(want))
    assert torch.allclose(chol[0] @ chol[0].T, want, atol=0.15)
    assert torch.allclose(chol[1] @ chol[1].T, 0.01 * torch.eye(3), atol=0.002)
    assert torch.equal(chol[0], torch.tril(chol[0]))


def test_label_gaussians_of_degenerate_codes_stay_finite():
    """A label whose codes are all the same, or has a single code: a finite factor, no error at training's end."""
    codes = torch.cat([torch.ones(5, 3), torch.randn(6, 3, generator=torch.Generator().manual_seed(0))])
    chol = label_gaussians(codes, ["same"] * 5 + ["one"] + ["rest"] * 5, ["one", "rest", "same"])
    assert chol.shape == (3, 3, 3) and torch.isfinite(chol).all()
    assert float(chol[2].abs().max()) < 1e-6  # the same code five times: (almost) no spread


def test_a_conditional_global_model_samples_from_its_labels_gaussian(cond_run):
    """Asked for a label, sampling draws from that label's Gaussian in the latent statistics, not N(0, I)."""
    ck, stats = load_checkpoint(cond_run), load_latent_stats(cond_run)
    d = ck.model_cfg.latent_dim
    assert stats.label_chol is not None and stats.label_chol.shape == (len(LABELS), d, d)
    k = stats.label_names.index("2")
    z = sample(ck, 4000, seed=0, label="2")  # (4000, D)
    assert torch.allclose(z.mean(0), stats.label_means[k], atol=0.1 * float(stats.label_chol[k].diag().max()) + 0.01)
    cov = torch.cov(z.T)
    want = stats.label_chol[k] @ stats.label_chol[k].T
    assert torch.allclose(cov, want, atol=0.1 * float(want.diag().max()) + 1e-3)
    assert torch.equal(sample(ck, 3, temperature=0.0, seed=1, label="2"), stats.label_means[k].expand(3, -1))
    assert torch.equal(sample(ck, 3, seed=4, label="0"), sample(ck, 3, seed=4, label="0"))
    assert torch.allclose(start_code(ck, "prior", seed=4, label="0"), sample(ck, 1, seed=4, label="0")[0])


def test_label_gaussians_of_the_wrong_shape_are_refused(cond_run, tmp_path):
    stats = load_latent_stats(cond_run)
    stats.label_chol = stats.label_chol[:, :-1]
    save_latent_stats(tmp_path, stats)
    with pytest.raises(LatentStatsError, match="label Gaussians of shape"):
        load_latent_stats(tmp_path)


def test_unconditional_model_refuses_a_label(tiny_ckpt):
    with pytest.raises(InputError, match="not conditioned on labels"):
        decode(tiny_ckpt, torch.zeros(1, 4), "1")


def test_cli_sample_with_a_label(cond_run, tmp_path, capsys, trained):
    base = ["sample", "--count", "2", "--phase", "zero", "--seed", "1"]
    assert main([*base, "--checkpoint", str(cond_run), "--label", "1", "--output", str(tmp_path / "a")]) == 0
    assert "wrote 2 samples of label 1" in capsys.readouterr().out
    assert len(list((tmp_path / "a").iterdir())) == 2
    assert main([*base, "--checkpoint", str(cond_run), "--label", "7", "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown label '7'; this model knows 0, 1, 2"]
    assert main([*base, "--checkpoint", str(trained[0]), "--label", "1", "--output", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: this model is not conditioned on labels")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


@pytest.mark.filterwarnings("ignore:Not enough STFT frames:RuntimeWarning")
def test_evaluate_reconstructs_each_file_with_its_label(cond_run, tiny_store):
    from vae.evaluate import evaluate

    res = evaluate(load_checkpoint(cond_run), tiny_store.path, phase="zero", with_stoi=False)
    assert res["labelled"] == res["n_files"] == len(tiny_store.indices("test"))


# ----- classifier and benchmark ------------------------------------------------------------------------


def test_classifier_trains_caches_and_measures(tiny_store, tmp_path):
    from benchmarks.digit_classifier import ClassifierConfig, held_out_accuracy, load_or_train

    cfg = ClassifierConfig(channels=(4, 8), epochs=2, batch_size=8)
    model, cached = load_or_train(tiny_store, tmp_path / "clf", cfg)
    assert not cached and model.labels == LABELS
    res = held_out_accuracy(model, tiny_store)
    assert 0 <= res["accuracy"] <= 1 and set(res["per_label"]) == set(LABELS)
    assert res["n_clips"] == len(tiny_store.indices("test"))
    again, cached = load_or_train(tiny_store, tmp_path / "clf", cfg)
    assert cached and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_bench_conditional_quick(cond_run, tiny_store, tmp_path):
    from benchmarks import bench_conditional
    from benchmarks.digit_classifier import ClassifierConfig

    res = bench_conditional.run(cond_run, tiny_store.path, tmp_path, per_label=3,
                                clf_cfg=ClassifierConfig(channels=(4,), epochs=1), cache=None, quick=True)
    assert set(res["samples"]) == set(LABELS) and all(r["n"] == 3 for r in res["samples"].values())
    assert 0 <= res["worst"] <= res["mean"] <= 1 and res["relabel"]["n"] == len(tiny_store.indices("test"))
    md = (tmp_path / "conditional.md").read_text()
    assert "held-out accuracy" in md and json.loads((tmp_path / "conditional.json").read_text())["quick"]


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_onnx_export_of_a_conditional_model_takes_the_label(cond_run, tmp_path, which):
    """Both graphs take a label input, onnxruntime matches PyTorch with labels, and sound_vae.json lists the
    vocabulary and each label's Gaussian (tiny: a 2-epoch run; shipped: checkpoints/digits-conditioned)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from vae.onnx_export import CONFIG, DECODER, TOLERANCE, compare_onnx, export_onnx

    src = cond_run if which == "tiny" else Path(__file__).resolve().parents[1] / "checkpoints" / "digits-conditioned"
    ck = load_checkpoint(src)
    out = export_onnx(src, tmp_path / "onnx")
    err = compare_onnx(ck, out)
    assert max(err.values()) <= TOLERANCE, err
    doc = json.loads((out / CONFIG).read_text())
    stats = load_latent_stats(src)
    assert doc["labels"]["vocabulary"] == list(ck.model_cfg.labels)
    assert np.allclose(doc["labels"]["gaussians"]["chol"], stats.label_chol.numpy(), atol=1e-6)
    dec = ort.InferenceSession(str(out / DECODER), providers=["CPUExecutionProvider"])
    assert [i.name for i in dec.get_inputs()] == ["z", "label"]
    assert doc["decoder"]["shapes"]["label"] == doc["encoder"]["shapes"]["label"] == ["batch"]
    z = np.zeros((2, ck.model_cfg.latent_dim), dtype="f4")
    a, b = (dec.run(None, {"z": z, "label": np.array([k, k], dtype="i8")})[0] for k in (0, 2))
    assert not np.allclose(a, b)  # the label reaches the decoder
    want = decode(ck, torch.from_numpy(z), ck.model_cfg.labels[2]).numpy()
    assert np.abs(b - want).max() <= TOLERANCE


def test_the_conditional_report_is_appended_to_benchmarks_md(tmp_path):
    from benchmarks import run_all

    assert run_all.conditional_section(tmp_path / "none.md") == ""
    md = tmp_path / "conditional.md"
    md.write_text("## Conditional generation\n\nbody\n")
    assert run_all.conditional_section(md) == (
        "\n# Conditional generation (`python -m benchmarks.bench_conditional`, not part of run_all)\n\nbody\n")
