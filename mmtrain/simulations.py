"""Synthetic multi-modal data sets of the paper's simulations (docs/math.md §4.1–§4.3).

Every generator draws from its own `np.random.RandomState(seed)` and never touches NumPy's
global RNG. The iVAE generators consume that stream in exactly the order of the reference
scripts (which seed NumPy's global legacy RNG with the same seed) and repeat their float32
arithmetic, so they reproduce the reference data bit for bit while drawing the 10 000
condition-number samples per mixing matrix in one vectorised batch.

Draw order of `make_linear_gaussian` (the reference uses JAX keys, so no stream can match it):
dims `D_1..D_M`; then per modality `A_s ~ U(−1, 1)` and `b_s ~ N(0, I)`; then `z ~ N(0, I)`;
then the noise of each modality in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmtrain.errors import ConfigError

FAMILIES = ("gaussian", "laplace")
_LRELU_SLOPE = 0.1
_COND_PERCENTILE = 25.0
_MASK_TOLERANCE = 0.005
_MASK_MAX_TRIES = 10_000


@dataclass(frozen=True, eq=False)
class LinearGaussianData:
    """Samples of x_s = W_s z + b_s + noise_std · ε_s, z ~ N(0, I) (docs/math.md §4.1)."""

    x: list[np.ndarray]
    z: np.ndarray
    loadings: list[np.ndarray]
    offsets: list[np.ndarray]
    noise_std: float

    @property
    def latent_dim(self) -> int:
        return int(self.z.shape[1])


@dataclass(frozen=True, eq=False)
class SimulatedDataset:
    """Modalities, availability mask `[N, M]` (columns in `x`'s key order) and ground truth."""

    x: dict[str, np.ndarray]
    avail: np.ndarray
    sources: np.ndarray
    segments: np.ndarray
    modality_types: dict[str, str]

    def __post_init__(self) -> None:
        n = self.sources.shape[0]
        if self.avail.shape != (n, len(self.x)):
            raise ConfigError(f"avail has shape {self.avail.shape}, expected {(n, len(self.x))}")
        if list(self.modality_types) != list(self.x):
            raise ConfigError("modality_types must list the modalities of x in the same order")

    @property
    def num_examples(self) -> int:
        return int(self.sources.shape[0])

    @property
    def modalities(self) -> list[str]:
        return list(self.x)


def make_linear_gaussian(
    num_modalities: int = 5,
    num_examples: int = 5000,
    latent_block: int = 5,
    x_dim_max: int = 60,
    sparse: bool = True,
    noise_std: float = 1.0,
    seed: int = 1,
) -> LinearGaussianData:
    """Linear Gaussian multi-modal data with orthonormal loadings (docs/math.md §4.1).

    `D_s ~ UniformInteger[x_dim_max // 2, x_dim_max)`. With `sparse`, z has blocks
    `[private_1, …, private_M, shared]` of size `latent_block` each and W_s is non-zero only in
    block s and the shared block; otherwise z has `latent_block` dense coordinates.
    """
    _check_positive(num_modalities=num_modalities, num_examples=num_examples)
    _check_positive(latent_block=latent_block)
    if noise_std < 0:
        raise ConfigError(f"noise_std must be >= 0, got {noise_std}")
    columns = 2 * latent_block if sparse else latent_block
    if x_dim_max // 2 < columns:
        raise ConfigError(
            f"x_dim_max={x_dim_max} is too small: every modality needs at least {columns} "
            f"dimensions for orthonormal loadings, so x_dim_max must be >= {2 * columns}"
        )
    rng = np.random.RandomState(seed)
    dims = rng.randint(x_dim_max // 2, x_dim_max, size=num_modalities)
    latent_dim = latent_block * (num_modalities + 1) if sparse else latent_block

    loadings, offsets = [], []
    for s, dim in enumerate(dims):
        q = np.linalg.qr(rng.uniform(-1.0, 1.0, size=(dim, columns)))[0]
        if sparse:
            w = np.zeros((dim, latent_dim))
            w[:, s * latent_block : (s + 1) * latent_block] = q[:, :latent_block]
            w[:, num_modalities * latent_block :] = q[:, latent_block:]
        else:
            w = q
        loadings.append(w)
        offsets.append(rng.normal(size=dim))

    z = rng.normal(size=(num_examples, latent_dim))
    x = [
        z @ w.T + b + noise_std * rng.normal(size=(num_examples, w.shape[0]))
        for w, b in zip(loadings, offsets, strict=True)
    ]
    return LinearGaussianData(x=x, z=z, loadings=loadings, offsets=offsets, noise_std=noise_std)


def make_ivae_bimodal(
    num_examples: int = 4000,
    num_segments: int = 5,
    latent_dim: int = 2,
    noise_std: float = 0.1,
    seed: int = 1,
) -> SimulatedDataset:
    """Segment label `u` (one-hot `[N, 1, C]`) and x = lrelu(s A) A + noise (docs/math.md §4.2).

    A is the Q factor of a `U(−1, 1)` square matrix; rows are randomly permuted; all observed.
    Draw order: Lmod, mseg, ε, A, noise, permutation.
    """
    _check_segments(num_examples, num_segments)
    _check_positive(latent_dim=latent_dim)
    rng = np.random.RandomState(seed)
    sources, segments = _segment_sources(rng, num_examples, num_segments, latent_dim, "gaussian")
    mixing = np.linalg.qr(rng.uniform(-1.0, 1.0, size=(latent_dim, latent_dim)))[0]
    mixing = mixing.astype(np.float32)
    x = _lrelu(sources @ mixing) @ mixing
    x = _add_noise(rng, x, noise_std)

    perm = rng.permutation(num_examples)
    sources, segments, x = sources[perm], segments[perm], x[perm]
    onehot = np.eye(num_segments, dtype=np.float32)[segments][:, None, :]
    return SimulatedDataset(
        x={"u": onehot, "x": x},
        avail=np.ones((num_examples, 2), dtype=bool),
        sources=sources,
        segments=segments,
        modality_types={"u": "categorical", "x": "normal"},
    )


def make_ivae_multimodal(
    num_modalities: int = 4,
    num_examples: int = 10000,
    num_segments: int = 5,
    latent_dim: int = 10,
    observed_dim: int = 25,
    noise_std: float = 0.5,
    family: str = "gaussian",
    missing_rate: float = 0.5,
    faithful: bool = True,
    seed: int = 2,
    condition_samples: int = 10000,
) -> tuple[SimulatedDataset, SimulatedDataset]:
    """Train and test sets of the multi-modal iVAE simulation with missing modalities (§4.3).

    Each modality x_m = lrelu(lrelu(s A_m) B_m) B_m + noise with its own well-conditioned A_m
    `[d, D]` and B_m `[D, D]` (B_m = A_m when d = D, as in the reference). The first
    `num_examples // 2` rows are the train set; with `faithful` the rows stay ordered by
    segment (the reference's quirk), otherwise they are shuffled first. Availability masks
    follow the CPM-Nets generator, train then test.

    Draw order: Lmod, mseg, ε; per modality the condition samples and candidates of A, then
    of B, then its noise; the shuffling permutation (only without `faithful`); train mask;
    test mask.
    """
    _check_segments(num_examples, num_segments)
    _check_positive(num_modalities=num_modalities, latent_dim=latent_dim)
    _check_positive(observed_dim=observed_dim, condition_samples=condition_samples)
    if num_examples < 2:
        raise ConfigError(f"num_examples must be >= 2 to split train and test, got {num_examples}")
    family = family.lower()
    if family not in FAMILIES:
        raise ConfigError(f"unknown source family {family!r}; choose one of {', '.join(FAMILIES)}")
    if not 0.0 <= missing_rate < 1.0:
        raise ConfigError(f"missing_rate must be in [0, 1), got {missing_rate}")
    if noise_std < 0:
        raise ConfigError(f"noise_std must be >= 0, got {noise_std}")

    rng = np.random.RandomState(seed)
    sources, segments = _segment_sources(rng, num_examples, num_segments, latent_dim, family)
    x = {}
    for m in range(num_modalities):
        a = _uniform_mixing_matrix(rng, latent_dim, observed_dim, condition_samples)
        h = _lrelu(sources @ a)
        if latent_dim == observed_dim:
            b = a
        else:
            b = _uniform_mixing_matrix(rng, observed_dim, observed_dim, condition_samples)
        h = _lrelu(h @ b) @ b
        x[f"x{m + 1}"] = _add_noise(rng, h, noise_std)

    if not faithful:
        perm = rng.permutation(num_examples)
        sources, segments = sources[perm], segments[perm]
        x = {k: v[perm] for k, v in x.items()}

    n_train = num_examples // 2
    parts = []
    for rows in (slice(0, n_train), slice(n_train, num_examples)):
        n_rows = rows.stop - rows.start
        parts.append(
            SimulatedDataset(
                x={k: v[rows] for k, v in x.items()},
                avail=cpm_missing_mask(rng, n_rows, num_modalities, missing_rate),
                sources=sources[rows],
                segments=segments[rows],
                modality_types=dict.fromkeys(x, "normal"),
            )
        )
    return parts[0], parts[1]


def cpm_missing_mask(
    rng: np.random.RandomState, num_examples: int, num_modalities: int, missing_rate: float
) -> np.ndarray:
    """CPM-Nets availability mask `[N, M]` bool: ≥ 1 view per row, observed fraction ≈ 1 − rate.

    One random view per row is always kept; extra views are added at an integer-percent rate
    corrected once for collisions, redrawn until the observed fraction is within 0.005 of
    `1 − missing_rate`. At or below one view per row on average, only the kept view remains.
    """
    one_rate = 1.0 - missing_rate
    n, m = num_examples, num_modalities
    if one_rate <= 1.0 / m:
        return np.eye(m, dtype=bool)[rng.randint(0, m, size=n)]
    if one_rate == 1.0:
        return rng.randint(1, 2, size=(n, m)) > 0
    for _ in range(_MASK_MAX_TRIES):
        keep = np.eye(m, dtype=np.int64)[rng.randint(0, m, size=n)]
        extra_ones = m * n * one_rate - n
        ratio = extra_ones / (m * n)
        extra = rng.randint(0, 100, size=(n, m)) < int(ratio * 100)
        collisions = np.sum((extra + keep) > 1)
        ratio = extra_ones / (1 - collisions / extra_ones) / (m * n)
        extra = rng.randint(0, 100, size=(n, m)) < int(ratio * 100)
        mask = (extra + keep) > 0
        if abs(one_rate - mask.mean()) < _MASK_TOLERANCE:
            return mask
    raise ConfigError(
        f"no missing-modality mask with observed fraction within {_MASK_TOLERANCE} of "
        f"{one_rate:g} after {_MASK_MAX_TRIES} tries; use more examples or another missing_rate"
    )


def _segment_sources(
    rng: np.random.RandomState, num_examples: int, num_segments: int, dim: int, family: str
) -> tuple[np.ndarray, np.ndarray]:
    """Uncentred non-stationary sources, float32 `[N, d]`, ordered by segment."""
    scales = rng.uniform(0.5, 3.0, size=(num_segments, dim))
    means = rng.uniform(-5.0, 5.0, size=(num_segments, dim))
    if family == "gaussian":
        eps = rng.standard_normal(size=(num_examples, dim)).astype(np.float32)
    else:
        eps = rng.laplace(0.0, 1.0 / np.sqrt(2.0), size=(num_examples, dim)).astype(np.float32)
    segments = np.repeat(np.arange(num_segments), num_examples // num_segments)
    # Two separate float32 roundings, as the reference's in-place updates do.
    scaled = (eps * scales[segments]).astype(np.float32)
    return (scaled + means[segments]).astype(np.float32), segments


def _uniform_mixing_matrix(
    rng: np.random.RandomState, rows: int, cols: int, condition_samples: int
) -> np.ndarray:
    """`U(−1, 1)` matrix with unit columns, redrawn until its condition number is at most the
    25th percentile of `condition_samples` such matrices (float32, like the reference)."""
    # One stacked draw consumes the stream exactly like the reference's one-by-one draws.
    samples = _unit_columns(rng.uniform(-1.0, 1.0, size=(condition_samples, rows, cols)))
    threshold = np.percentile(np.linalg.cond(samples), _COND_PERCENTILE)
    while True:
        candidate = _unit_columns(rng.uniform(-1.0, 1.0, size=(rows, cols)))
        if np.linalg.cond(candidate) <= threshold:
            return candidate


def _unit_columns(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    # Summing each column along a contiguous last axis gives NumPy's pairwise float32 sum,
    # bit for bit the reference's column-by-column normalisation.
    squares = np.ascontiguousarray(np.swapaxes(a * a, -1, -2))
    return a / np.sqrt(squares.sum(axis=-1))[..., None, :]


def _lrelu(x: np.ndarray) -> np.ndarray:
    # The reference multiplies in float64 before rounding back to float32.
    return np.where(x > 0, x, x.astype(np.float64) * _LRELU_SLOPE).astype(np.float32)


def _add_noise(rng: np.random.RandomState, x: np.ndarray, noise_std: float) -> np.ndarray:
    if noise_std == 0:
        return x  # the reference draws no noise at all then
    noise = rng.standard_normal(size=x.shape)
    return (x.astype(np.float64) + noise_std * noise).astype(np.float32)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value}")


def _check_segments(num_examples: int, num_segments: int) -> None:
    _check_positive(num_examples=num_examples, num_segments=num_segments)
    if num_examples % num_segments:
        raise ConfigError(
            f"num_examples={num_examples} must be divisible by num_segments={num_segments} "
            "(every segment has the same number of examples)"
        )
