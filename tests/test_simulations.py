"""Simulated data sets (docs/math.md §4.1–§4.3): shapes, seeding, structure, and agreement with
straightforward float64 re-implementations written from docs/math.md."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kurtosis

from mmtrain.errors import ConfigError
from mmtrain.simulations import (
    SimulatedDataset,
    make_ivae_bimodal,
    make_ivae_multimodal,
    make_linear_gaussian,
)

# ----------------------------------------------------------------------------- references


def _lrelu64(x: np.ndarray) -> np.ndarray:
    return np.array([[v if v > 0 else 0.1 * v for v in row] for row in x])


def _reference_sources(rng, n_per_seg, n_seg, d, laplace=False):
    scales = rng.uniform(0.5, 3, (n_seg, d))
    means = rng.uniform(-5, 5, (n_seg, d))
    if laplace:
        eps = rng.laplace(0, 1 / np.sqrt(2), (n_per_seg * n_seg, d))
    else:
        eps = rng.randn(n_per_seg * n_seg, d)
    sources, labels = [], []
    for k in range(n_seg):
        sources.append(eps[k * n_per_seg : (k + 1) * n_per_seg] * scales[k] + means[k])
        labels += [k] * n_per_seg
    return np.concatenate(sources), np.array(labels)


def _reference_mixing(rng, rows, cols, samples):
    def draw():
        a = rng.uniform(-1, 1, (rows, cols))
        for j in range(cols):
            a[:, j] /= np.linalg.norm(a[:, j])
        return a

    threshold = np.percentile([np.linalg.cond(draw()) for _ in range(samples)], 25)
    while True:
        a = draw()
        if np.linalg.cond(a) <= threshold:
            return a


def _reference_mask(rng, n, m, missing_rate):
    one_rate = 1 - missing_rate
    while True:
        keep = np.zeros((n, m), dtype=int)
        keep[np.arange(n), rng.randint(0, m, size=n)] = 1
        n1 = m * n * one_rate - n
        extra = rng.randint(0, 100, size=(n, m)) < int(n1 / (m * n) * 100)
        overlap = np.sum(extra + keep > 1)
        n1 = n1 / (1 - overlap / n1)
        extra = rng.randint(0, 100, size=(n, m)) < int(n1 / (m * n) * 100)
        mask = extra + keep > 0
        if abs(one_rate - mask.mean()) < 0.005:
            return mask


# ----------------------------------------------------------------------------- linear


def test_linear_gaussian_shapes_and_dims():
    data = make_linear_gaussian(num_modalities=3, num_examples=400, seed=4)
    assert data.latent_dim == 5 * 4 and data.z.shape == (400, 20)
    assert len(data.x) == len(data.loadings) == len(data.offsets) == 3
    for x, w, b in zip(data.x, data.loadings, data.offsets, strict=True):
        assert 30 <= x.shape[1] < 60
        assert x.shape == (400, w.shape[0]) and w.shape[1] == 20 and b.shape == (w.shape[0],)
        assert x.dtype == np.float64
    dense = make_linear_gaussian(num_modalities=2, num_examples=10, sparse=False)
    assert dense.latent_dim == 5 and all(w.shape[1] == 5 for w in dense.loadings)


def test_linear_loadings_orthonormal_with_sparse_blocks():
    m, block = 4, 3
    data = make_linear_gaussian(num_modalities=m, num_examples=5, latent_block=block)
    for s, w in enumerate(data.loadings):
        private = slice(s * block, (s + 1) * block)
        shared = slice(m * block, None)
        q = np.concatenate([w[:, private], w[:, shared]], axis=1)
        np.testing.assert_allclose(q.T @ q, np.eye(2 * block), atol=1e-12)
        others = np.delete(np.arange(m * block), np.arange(s * block, (s + 1) * block))
        assert np.all(w[:, others] == 0)
    dense = make_linear_gaussian(num_modalities=2, num_examples=5, sparse=False)
    for w in dense.loadings:
        np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-12)


def test_linear_data_moments_match_the_model():
    noise = 0.7
    data = make_linear_gaussian(
        num_modalities=2, num_examples=200_000, latent_block=2, x_dim_max=8, noise_std=noise
    )
    x = np.concatenate(data.x, axis=1)
    w = np.concatenate(data.loadings, axis=0)
    b = np.concatenate(data.offsets)
    np.testing.assert_allclose(x.mean(axis=0), b, atol=0.01)
    model_cov = w @ w.T + noise**2 * np.eye(len(b))
    np.testing.assert_allclose(np.cov(x, rowvar=False), model_cov, atol=0.02)
    residual = x - data.z @ w.T - b
    np.testing.assert_allclose(residual.std(axis=0), noise, rtol=0.01)
    np.testing.assert_allclose(np.cov(data.z, rowvar=False), np.eye(data.latent_dim), atol=0.02)


def test_linear_follows_documented_draw_order():
    data = make_linear_gaussian(num_modalities=2, num_examples=7, latent_block=2, x_dim_max=12)
    rng = np.random.RandomState(1)
    dims = rng.randint(6, 12, size=2)
    q = []
    for dim in dims:
        q.append(np.linalg.qr(rng.uniform(-1, 1, (dim, 4)))[0])
        np.testing.assert_array_equal(rng.normal(size=dim), data.offsets[len(q) - 1])
    np.testing.assert_array_equal(data.loadings[1][:, 2:4], q[1][:, :2])
    z = rng.normal(size=(7, 6))
    np.testing.assert_array_equal(z, data.z)
    noise = rng.normal(size=(7, dims[0]))
    np.testing.assert_allclose(data.x[0], z @ data.loadings[0].T + data.offsets[0] + noise)


def test_linear_seeding_is_local_and_deterministic():
    state = np.random.get_state()[1].copy()
    a = make_linear_gaussian(num_modalities=2, num_examples=50, seed=3)
    b = make_linear_gaussian(num_modalities=2, num_examples=50, seed=3)
    c = make_linear_gaussian(num_modalities=2, num_examples=50, seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    for xa, xb in zip(a.x, b.x, strict=True):
        np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(a.z, c.z)


def test_linear_rejects_too_small_dimensions():
    with pytest.raises(ConfigError, match="x_dim_max"):
        make_linear_gaussian(latent_block=5, x_dim_max=18)
    with pytest.raises(ConfigError):
        make_linear_gaussian(num_modalities=0)


# ----------------------------------------------------------------------------- iVAE bimodal


def test_ivae_bimodal_structure():
    data = make_ivae_bimodal()
    assert data.modalities == ["u", "x"]
    assert data.modality_types == {"u": "categorical", "x": "normal"}
    u, x = data.x["u"], data.x["x"]
    assert u.shape == (4000, 1, 5) and u.dtype == np.float32
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert data.sources.shape == (4000, 2)
    np.testing.assert_array_equal(u.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(u[:, 0].argmax(axis=-1), data.segments)
    np.testing.assert_array_equal(np.bincount(data.segments), [800] * 5)
    assert data.avail.shape == (4000, 2) and data.avail.all()
    assert np.any(np.diff(data.segments) < 0)  # rows are shuffled


def test_ivae_bimodal_matches_float64_reference():
    data = make_ivae_bimodal(num_examples=600, num_segments=3, seed=7)
    rng = np.random.RandomState(7)
    sources, labels = _reference_sources(rng, 200, 3, 2)
    a = np.linalg.qr(rng.uniform(-1, 1, (2, 2)))[0]
    x = _lrelu64(sources @ a) @ a + 0.1 * rng.randn(600, 2)
    perm = rng.permutation(600)
    np.testing.assert_array_equal(data.segments, labels[perm])
    np.testing.assert_allclose(data.sources, sources[perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x["x"], x[perm], rtol=1e-5, atol=1e-4)


def test_ivae_bimodal_seeding():
    a, b, c = (make_ivae_bimodal(num_examples=100, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.x["x"], b.x["x"])
    assert not np.array_equal(a.x["x"], c.x["x"])
    with pytest.raises(ConfigError, match="divisible"):
        make_ivae_bimodal(num_examples=4001)


# ----------------------------------------------------------------------------- iVAE multimodal


def _small_multimodal(**kwargs):
    options = dict(num_examples=2000, condition_samples=100)
    options.update(kwargs)
    return make_ivae_multimodal(**options)


def test_ivae_multimodal_structure_and_faithful_split():
    train, test = _small_multimodal()
    for part in (train, test):
        assert part.modalities == ["x1", "x2", "x3", "x4"]
        assert set(part.modality_types.values()) == {"normal"}
        assert all(v.shape == (1000, 25) and v.dtype == np.float32 for v in part.x.values())
        assert part.sources.shape == (1000, 10) and part.avail.shape == (1000, 4)
        assert part.avail.dtype == bool
    # Unshuffled: ordered by segment, train = segments 0, 1 and the first half of 2.
    np.testing.assert_array_equal(train.segments, np.repeat([0, 1, 2], [400, 400, 200]))
    np.testing.assert_array_equal(test.segments, np.repeat([2, 3, 4], [200, 400, 400]))
    train_rows = {row.tobytes() for row in train.sources}
    assert not any(row.tobytes() in train_rows for row in test.sources)


def test_ivae_multimodal_shuffled_split_is_a_permutation_of_the_same_data():
    ordered = _small_multimodal()
    shuffled = _small_multimodal(faithful=False)
    assert set(np.unique(shuffled[0].segments)) == set(range(5))
    assert np.any(np.diff(shuffled[0].segments) < 0)

    def rows(parts):
        stacked = np.concatenate([np.column_stack([p.sources, p.x["x3"]]) for p in parts])
        return stacked[np.lexsort(stacked.T[::-1])]

    np.testing.assert_array_equal(rows(ordered), rows(shuffled))
    train_rows = {row.tobytes() for row in shuffled[0].sources}
    assert not any(row.tobytes() in train_rows for row in shuffled[1].sources)


def test_ivae_multimodal_matches_float64_reference():
    train, test = _small_multimodal(
        num_modalities=2,
        num_examples=500,
        latent_dim=3,
        observed_dim=6,
        missing_rate=0.3,
        condition_samples=30,
    )
    rng = np.random.RandomState(2)
    sources, labels = _reference_sources(rng, 100, 5, 3)
    xs = []
    for _ in range(2):
        a = _reference_mixing(rng, 3, 6, 30)
        h = _lrelu64(sources @ a)
        b = _reference_mixing(rng, 6, 6, 30)
        xs.append(_lrelu64(h @ b) @ b + 0.5 * rng.randn(500, 6))
    masks = [_reference_mask(rng, 250, 2, 0.3), _reference_mask(rng, 250, 2, 0.3)]
    for part, rows, mask in zip(
        (train, test), (slice(0, 250), slice(250, 500)), masks, strict=True
    ):
        np.testing.assert_array_equal(part.segments, labels[rows])
        np.testing.assert_allclose(part.sources, sources[rows], rtol=1e-5, atol=1e-5)
        for name, x in zip(("x1", "x2"), xs, strict=True):
            np.testing.assert_allclose(part.x[name], x[rows], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(part.avail, mask)


@pytest.mark.parametrize("missing_rate", [0.3, 0.5, 0.6])
def test_ivae_multimodal_masks(missing_rate):
    train, test = _small_multimodal(missing_rate=missing_rate)
    for part in (train, test):
        assert part.avail.any(axis=1).all()
        assert abs(part.avail.mean() - (1 - missing_rate)) < 0.005
    assert not np.array_equal(train.avail, test.avail)


def test_ivae_multimodal_mask_edge_rates():
    full = _small_multimodal(missing_rate=0.0)[0]
    assert full.avail.all()
    single = _small_multimodal(missing_rate=0.8)[1]
    np.testing.assert_array_equal(single.avail.sum(axis=1), 1)


def test_ivae_multimodal_default_configuration():
    train, test = make_ivae_multimodal()
    assert train.num_examples == test.num_examples == 5000
    assert train.x["x4"].shape == (5000, 25)
    for part in (train, test):
        assert part.avail.any(axis=1).all() and abs(part.avail.mean() - 0.5) < 0.005


def test_ivae_multimodal_families():
    def excess_kurtosis(family):
        train, test = _small_multimodal(family=family, num_examples=10000, num_modalities=1)
        sources = np.concatenate([train.sources, test.sources])
        segments = np.concatenate([train.segments, test.segments])
        standardised = [
            (sources[segments == k] - sources[segments == k].mean(0))
            / sources[segments == k].std(0)
            for k in range(5)
        ]
        return kurtosis(np.concatenate(standardised).ravel())

    assert abs(excess_kurtosis("gaussian")) < 0.3
    assert abs(excess_kurtosis("Laplace") - 3.0) < 0.6


def test_ivae_multimodal_seeding():
    a, b = _small_multimodal(seed=5)[0], _small_multimodal(seed=5)[0]
    c = _small_multimodal(seed=6)[0]
    np.testing.assert_array_equal(a.x["x2"], b.x["x2"])
    np.testing.assert_array_equal(a.avail, b.avail)
    assert not np.array_equal(a.x["x2"], c.x["x2"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_examples": 2001}, "divisible"),
        ({"family": "cauchy"}, "family"),
        ({"missing_rate": 1.0}, "missing_rate"),
        ({"condition_samples": 0}, "condition_samples"),
    ],
)
def test_ivae_multimodal_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _small_multimodal(**kwargs)


def test_simulated_dataset_checks_mask_shape():
    with pytest.raises(ConfigError, match="avail"):
        SimulatedDataset(
            x={"a": np.zeros((3, 2), np.float32)},
            avail=np.ones((3, 2), bool),
            sources=np.zeros((3, 1)),
            segments=np.zeros(3, int),
            modality_types={"a": "normal"},
        )
