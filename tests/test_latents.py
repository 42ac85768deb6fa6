"""Latent statistics on data with known structure (vae.latents): PCA on rotated codes, projection, labels."""

import numpy as np
import pytest
import torch

from vae import latents
from vae.generate import encode
from vae.latents import compute_latent_stats, stats_from_codes

SD = np.array([3.0, 2.0, 1.0, 0.5, 0.1])  # spread along each true direction, distinct and decreasing
MEAN = np.array([1.0, -2.0, 0.5, 3.0, 0.0])


def _rotated_codes(n: int = 60, seed: int = 0):
    """Codes whose sample covariance is exactly DIRS^T diag(SD^2) DIRS, with DIRS a random rotation.

    Returns (codes (n, D), true directions (D, D) one per row, true coordinates (n, D)).
    """
    rng = np.random.default_rng(seed)
    d = len(SD)
    a = rng.standard_normal((n, d))
    q, _ = np.linalg.qr(a - a.mean(0))  # centred, orthonormal columns
    coords = q * SD * np.sqrt(n - 1)  # sample sd along column j is exactly SD[j]
    dirs, _ = np.linalg.qr(rng.standard_normal((d, d)))  # rows: orthonormal directions, far from the axes
    codes = MEAN + coords @ dirs
    return torch.from_numpy(codes).float(), dirs, coords


def test_rotated_data_is_not_axis_aligned():
    """Guard for the test data itself: no true direction is close to a coordinate axis or to another's transpose."""
    _, dirs, _ = _rotated_codes()
    assert np.abs(dirs).max() < 0.95
    assert np.abs(np.abs(dirs[0]) - np.abs(dirs[:, 0])).max() > 0.1  # V and V^T differ


def test_principal_directions_of_rotated_data():
    codes, dirs, _ = _rotated_codes()
    s = stats_from_codes(codes, [None] * len(codes), [f"c{i}" for i in range(len(codes))])
    assert s.components.shape == (5, 5)
    np.testing.assert_allclose(s.mean.numpy(), MEAN, atol=1e-5)
    comps = s.components.double().numpy()
    np.testing.assert_allclose(comps @ comps.T, np.eye(5), atol=1e-5)  # unit length, orthogonal
    cos = np.abs((comps * dirs).sum(1))  # |cos| between found and true direction k
    assert (cos > 0.99).all(), cos
    np.testing.assert_allclose(s.component_sd.numpy(), SD, rtol=1e-4)
    np.testing.assert_allclose(s.explained.numpy(), SD**2 / (SD**2).sum(), rtol=1e-4)
    assert float(s.explained.sum()) == pytest.approx(1.0, abs=1e-6)
    # 3^2 / 14.26 = 0.63, + 2^2 -> 0.91, + 1 -> 0.98
    assert [s.n_sliders(c) for c in (0.5, 0.8, 0.95, 0.99)] == [1, 2, 3, 4]
    assert s.n_sliders(1.0, cap=2) == 2


def test_project_gives_coordinates_along_the_true_directions():
    codes, dirs, coords = _rotated_codes()
    s = stats_from_codes(codes, [None] * len(codes), [str(i) for i in range(len(codes))])
    signs = np.sign((s.components.double().numpy() * dirs).sum(1))  # a direction's sign is arbitrary
    proj = s.project(codes, k=3).double().numpy()
    assert proj.shape == (len(codes), 3)
    np.testing.assert_allclose(proj * signs[:3], coords[:, :3], atol=1e-4)
    # one code alone, and the default k = 2
    z = torch.from_numpy(MEAN + 2.0 * dirs[1]).float()
    np.testing.assert_allclose(s.project(z).numpy() * signs[:2], [0.0, 2.0], atol=1e-5)
    # all components: projecting and mapping back gives the codes
    back = s.mean + s.project(codes, k=5) @ s.components
    torch.testing.assert_close(back, codes, atol=1e-4, rtol=0)


def test_fewer_codes_than_dimensions():
    codes = _rotated_codes()[0]
    s = stats_from_codes(codes[:3], ["a", "b", "a"], ["x", "y", "z"])
    assert s.components.shape == (3, 5) and s.component_sd.shape == (3,)
    assert float(s.component_sd[-1]) == pytest.approx(0.0, abs=1e-4)  # 3 points span a plane
    torch.testing.assert_close(s.label_means, torch.stack([codes[[0, 2]].mean(0), codes[1]]))
    assert s.label_names == ["a", "b"] and s.code_labels == ["a", "b", "a"] and s.code_names == ["x", "y", "z"]


def test_label_means_skip_unlabelled_and_empty_labels():
    codes = torch.arange(12.0).reshape(4, 3)
    s = stats_from_codes(codes, [None, "b", None, "b"], list("pqrs"))
    assert s.label_names == ["b"]
    torch.testing.assert_close(s.label_means, ((codes[1] + codes[3]) / 2)[None])
    none = stats_from_codes(codes, [None] * 4, list("pqrs"))
    assert none.label_names == [] and none.label_means.shape == (0, 3)


def test_compute_latent_stats_samples_at_most_max_points(tiny_ckpt, tiny_store, monkeypatch):
    monkeypatch.setattr(latents, "MAX_MAP_POINTS", 5)
    idx = tiny_store.indices("train")
    s = compute_latent_stats(tiny_ckpt.model, tiny_store, idx)
    assert s.codes.shape == (5, 4)
    names = [tiny_store.clip_name(i) for i in idx]
    picked = [names.index(n) for n in s.code_names]
    assert picked == sorted(set(picked))  # distinct clips of the given indices, in order
    chosen = [idx[k] for k in picked]
    torch.testing.assert_close(s.codes, encode(tiny_ckpt, np.array(tiny_store.specs[chosen]))[0])
    assert s.code_labels == [tiny_store.clips[i]["label"] for i in chosen]


def _stats_with_explained(explained):
    e = torch.tensor(explained)
    k = len(explained)
    return latents.LatentStats(torch.zeros(k), torch.eye(k), e.sqrt(), e, [], torch.zeros(0, k),
                               torch.zeros(0, k), [], [])


def test_n_sliders_stops_once_the_coverage_is_reached():
    s = _stats_with_explained([0.5, 0.25, 0.25])  # cumulative 0.5, 0.75, 1.0: exact in binary
    assert s.n_sliders(0.5) == 1  # the first direction alone covers exactly half
    assert s.n_sliders(0.5001) == 2 and s.n_sliders(0.75) == 2 and s.n_sliders(0.76) == 3
    assert s.n_sliders(1.5) == 3  # never more than there are directions
    assert s.n_sliders(1.0, cap=2) == 2
    assert _stats_with_explained([0.1] * 10).n_sliders() == latents.MAX_SLIDERS == 6  # 80% needs 8: capped


def test_two_codes_and_tiny_or_no_spread():
    """Sample statistics with n - 1 in the denominator; explained fractions sum to one however small the
    spread, and are zero (not NaN) when all codes coincide."""
    s = stats_from_codes(torch.tensor([[0.0, 0.0], [0.3, 0.4]]), [None, None], ["a", "b"])
    assert float(s.component_sd[0]) == pytest.approx(0.5 / np.sqrt(2), rel=1e-5)  # |a - b| / sqrt(2)
    np.testing.assert_allclose(s.explained.numpy(), [1.0, 0.0], atol=1e-6)
    same = stats_from_codes(torch.ones(3, 2), [None] * 3, list("abc"))
    assert torch.equal(same.explained, torch.zeros(2)) and torch.equal(same.component_sd, torch.zeros(2))
    one = stats_from_codes(torch.tensor([[1.0, 2.0]]), ["x"], ["only"])
    assert torch.equal(one.mean, torch.tensor([1.0, 2.0])) and torch.equal(one.component_sd, torch.zeros(1))


def test_map_sample_is_fixed_and_kept_in_the_given_order_when_it_fits(tiny_ckpt, tiny_store, monkeypatch):
    idx = tiny_store.indices("train")
    monkeypatch.setattr(latents, "MAX_MAP_POINTS", 5)
    s = compute_latent_stats(tiny_ckpt.model, tiny_store, idx)
    chosen = sorted(np.random.default_rng(0).choice(idx, 5, replace=False).tolist())  # reproducible: seed 0
    assert s.code_names == [tiny_store.clip_name(i) for i in chosen]
    # exactly MAX_MAP_POINTS clips: all of them, no sampling, in the order given
    order = list(reversed(idx[:5]))
    s = compute_latent_stats(tiny_ckpt.model, tiny_store, order)
    assert s.code_names == [tiny_store.clip_name(i) for i in order]
    torch.testing.assert_close(s.codes, encode(tiny_ckpt, np.array(tiny_store.specs[order]))[0])


def test_encode_indices_in_small_batches(tiny_ckpt, tiny_store):
    idx = tiny_store.indices("test")  # 12 clips in batches of 5, 5 and 2
    codes = latents.encode_indices(tiny_ckpt.model, tiny_store.specs, idx, batch=5)
    torch.testing.assert_close(codes, encode(tiny_ckpt, np.array(tiny_store.specs[idx]))[0])


def test_stats_file_without_names_loads_with_empty_lists(tmp_path):
    """A latents file written without metadata (another tool, an older version) still loads."""
    from safetensors.torch import save_file

    s = stats_from_codes(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), ["a"] * 6, list("uvwxyz"))
    save_file({k: getattr(s, k).contiguous() for k in
               ("mean", "components", "component_sd", "explained", "label_means", "codes")},
              str(tmp_path / "latents.safetensors"))
    back = latents.load_latent_stats(tmp_path)
    assert back.label_names == [] and back.code_labels == [] and back.code_names == []
    assert torch.equal(back.codes, s.codes) and torch.equal(back.mean, s.mean)
