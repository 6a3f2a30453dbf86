"""Evaluation metrics of the simulations: exact linear-Gaussian likelihoods (docs/math.md §4.1) and
the mean correlation coefficient (MCC) of identifiability (docs/math.md §4.5).

All computations are in float64 NumPy. The RDC-based MCC terms are random; `compute_mcc`
draws them from a local generator seeded by its `seed` argument instead of the reference's
global NumPy RNG, so its result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve, solve_triangular
from scipy.optimize import linear_sum_assignment
from sklearn.cross_decomposition import CCA
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from mmtrain.errors import ConfigError, DataError

MCC_METHODS = ("pearson", "rdc")
_LOG_2PI = float(np.log(2.0 * np.pi))

RandomSource = np.random.Generator | np.random.RandomState | None


def gaussian_log_likelihood(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x_n; mean, cov) for every row of `x` `[N, D]`, via the Cholesky factor of `cov`."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    mean = np.asarray(mean, dtype=np.float64)
    chol = _cholesky(np.asarray(cov, dtype=np.float64), "cov")
    if x.shape[1] != chol.shape[0] or mean.shape != (chol.shape[0],):
        raise DataError(f"shapes do not match: x {x.shape}, mean {mean.shape}, cov {chol.shape}")
    whitened = solve_triangular(chol, (x - mean).T, lower=True)
    mahalanobis = np.sum(whitened**2, axis=0)
    log_det = 2.0 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (mahalanobis + log_det + x.shape[1] * _LOG_2PI)


@dataclass(frozen=True, eq=False)
class PPCAFit:
    """Probabilistic PCA maximum-likelihood fit; `noise_var` is σ̃² = σ̂² / β."""

    mean: np.ndarray
    loadings: np.ndarray
    noise_var: float
    log_likelihood: float

    @property
    def covariance(self) -> np.ndarray:
        return self.loadings @ self.loadings.T + self.noise_var * np.eye(self.mean.shape[0])


def ppca_mle(x: np.ndarray, latent_dim: int, beta: float = 1.0) -> PPCAFit:
    """PPCA MLE (Tipping & Bishop) of `x` `[N, D]` with the noise variance annealed by β.

    σ̂² is the mean of the D − q smallest eigenvalues of the (1/N) sample covariance,
    σ̃² = σ̂² / β, W = U_q diag(sqrt(max(λ_q − σ̃², 0))) with the top-q eigenpairs in
    descending order, and `log_likelihood` = Σ_n log N(x_n; x̄, W Wᵀ + σ̃² I).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"x must be a matrix [N, D], got shape {x.shape}")
    dim = x.shape[1]
    if not 1 <= latent_dim < dim:
        raise ConfigError(f"latent_dim must be in [1, {dim - 1}] for data of dimension {dim}")
    if beta <= 0:
        raise ConfigError(f"beta must be > 0, got {beta}")
    mean = x.mean(axis=0)
    centred = x - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / x.shape[0])
    noise_var = float(np.mean(eigenvalues[:-latent_dim])) / beta
    scales = np.sqrt(np.clip(eigenvalues[::-1][:latent_dim] - noise_var, 0.0, None))
    loadings = eigenvectors[:, ::-1][:, :latent_dim] * scales
    log_likelihood = linear_gaussian_log_likelihood(x, loadings, mean, noise_var)
    return PPCAFit(mean=mean, loadings=loadings, noise_var=noise_var, log_likelihood=log_likelihood)


def linear_gaussian_log_likelihood(
    x: np.ndarray, loadings: np.ndarray, offsets: np.ndarray, noise_var: float
) -> float:
    """Σ_n log N(x_n; b, W Wᵀ + σ² I) for the concatenated modalities `x` `[N, D]`."""
    loadings = np.asarray(loadings, dtype=np.float64)
    cov = loadings @ loadings.T + noise_var * np.eye(loadings.shape[0])
    return float(np.sum(gaussian_log_likelihood(x, offsets, cov)))


def linear_gaussian_posterior(
    loadings: np.ndarray, offsets: np.ndarray, noise_var: float, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior p(z | x) = N(K⁻¹ Wᵀ (x − b), σ² K⁻¹), K = WᵀW + σ² I, of z ~ N(0, I).

    Returns the means `[N, q]` and the covariance `[q, q]` (shared by all rows). For a subset
    of modalities pass the rows of W, b and the columns of x that belong to it.
    """
    w = np.asarray(loadings, dtype=np.float64)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    k = w.T @ w + noise_var * np.eye(w.shape[1])
    try:
        factor = cho_factor(k, lower=True)
    except LinAlgError as err:
        raise DataError("WᵀW + σ² I is not positive definite; use noise_var > 0") from err
    means = cho_solve(factor, w.T @ (x - np.asarray(offsets, dtype=np.float64)).T).T
    cov = noise_var * cho_solve(factor, np.eye(w.shape[1]))
    return means, 0.5 * (cov + cov.T)


def rdc(
    x: np.ndarray, y: np.ndarray, k: int = 20, s: float = 0.5, rng: RandomSource = None
) -> float:
    """Randomised dependence coefficient of two samples `[n]` (Lopez-Paz et al., 2013).

    Rank copula p = rank/n, random sine features [sin([p, 1] W), 1] with W ~ N(0, s²)^{2×k}
    (drawn for x, then for y), and the largest canonical correlation between the two feature
    sets. `rng=None` uses NumPy's global RNG, as the reference does.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise DataError(f"x and y must have the same length, got {x.size} and {y.size}")
    draw = np.random if rng is None else rng
    features_x = _copula_features(x, k, s, draw)
    features_y = _copula_features(y, k, s, draw)
    with _single_threaded_blas():
        return _largest_canonical_correlation(features_x, features_y)


def mean_corr_coef(
    x: np.ndarray, y: np.ndarray, method: str = "pearson", rng: RandomSource = None
) -> float:
    """Mean |correlation| over the pairing of x's and y's columns that maximises its sum."""
    return float(np.mean(_assigned(_abs_corr(x, y, method, rng))[1]))


@dataclass(frozen=True)
class MCCResult:
    """The four MCC variants of `compute_mcc`, in the reference's return order."""

    weak_in: float
    weak_out: float
    strong_in: float
    strong_out: float

    def as_dict(self) -> dict[str, float]:
        return {
            "weak_in": self.weak_in,
            "weak_out": self.weak_out,
            "strong_in": self.strong_in,
            "strong_out": self.strong_out,
        }


def compute_mcc(
    sources: np.ndarray, latents: np.ndarray, cca_dim: int = 1, seed: int = 0
) -> MCCResult:
    """MCC between true sources and latents `[N, d]` as in the reference `mcc.py` (§4.5).

    Rows are split into halves I (first N//2) and O (next N//2) in the order given; for
    data stored in a meaningful order use `compute_mcc_permuted`. strong_out: Pearson, pairing
    fitted on I and scored on O; strong_in: RDC on I; weak_in / weak_out: RDC between the
    `cca_dim` canonical variates of a CCA fitted on I, evaluated on I / O.
    """
    sources = np.asarray(sources, dtype=np.float64)
    latents = np.asarray(latents, dtype=np.float64)
    if sources.ndim != 2 or latents.ndim != 2 or sources.shape[0] != latents.shape[0]:
        raise DataError(
            f"sources and latents must be [N, d] with the same N, got {sources.shape} and "
            f"{latents.shape}"
        )
    if sources.shape[0] < 4:
        raise DataError(f"compute_mcc needs at least 4 rows, got {sources.shape[0]}")
    if not 1 <= cca_dim <= min(sources.shape[1], latents.shape[1]):
        raise ConfigError(
            f"cca_dim must be in [1, {min(sources.shape[1], latents.shape[1])}], got {cca_dim}"
        )
    rng = np.random.default_rng(seed)
    half = sources.shape[0] // 2
    s_in, z_in = sources[:half], latents[:half]
    s_out, z_out = sources[half : 2 * half], latents[half : 2 * half]

    with _single_threaded_blas():
        pairs, _ = _assigned(_abs_corr(s_in, z_in, "pearson", None))
        strong_out = float(np.mean(_abs_corr(s_out, z_out, "pearson", None)[pairs]))
        strong_in = mean_corr_coef(s_in, z_in, "rdc", rng)
        cca = CCA(n_components=cca_dim).fit(s_in, z_in)
        weak_out = mean_corr_coef(*cca.transform(s_out, z_out), method="rdc", rng=rng)
        weak_in = mean_corr_coef(*cca.transform(s_in, z_in), method="rdc", rng=rng)
    return MCCResult(weak_in=weak_in, weak_out=weak_out, strong_in=strong_in, strong_out=strong_out)


def compute_mcc_permuted(
    sources: np.ndarray, latents: np.ndarray, cca_dim: int = 1, seed: int = 0
) -> MCCResult:
    """`compute_mcc` on the rows in a random order drawn from `seed` (the same order for
    sources and latents).

    `compute_mcc` splits the rows in the order given. Data stored by segment (the multimodal
    iVAE test split in faithful mode) would then fit the pairing and the CCA on some segments
    and score them on others. The reference scripts permute the rows (`perms` of their
    `generate()`) before computing MCC; every MCC that mmtrain reports goes through here.
    """
    sources = np.asarray(sources, dtype=np.float64)
    latents = np.asarray(latents, dtype=np.float64)
    if sources.ndim == 2 and latents.ndim == 2 and sources.shape[0] == latents.shape[0]:
        order = np.random.default_rng([seed, 1]).permutation(sources.shape[0])
        sources, latents = sources[order], latents[order]
    return compute_mcc(sources, latents, cca_dim, seed)


def _abs_corr(x: np.ndarray, y: np.ndarray, method: str, rng: RandomSource) -> np.ndarray:
    """|C| `[d_x, d_y]` with C[i, j] the correlation of x[:, i] and y[:, j]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"x and y must be [N, d] with the same N, got {x.shape} and {y.shape}")
    if method == "pearson":
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(x, y, rowvar=False)[: x.shape[1], x.shape[1] :]
        # A constant column (e.g. a collapsed latent) is uncorrelated, not an error.
        corr = np.nan_to_num(corr, nan=0.0)
    elif method == "rdc":
        corr = np.array([[rdc(xi, yj, rng=rng) for yj in y.T] for xi in x.T])
    else:
        raise ConfigError(f"unknown MCC method {method!r}; choose one of {', '.join(MCC_METHODS)}")
    return np.abs(corr)


def _assigned(abs_corr: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    pairs = linear_sum_assignment(-abs_corr)
    return pairs, abs_corr[pairs]


def _copula_features(
    x: np.ndarray, k: int, s: float, draw: np.random.Generator | np.random.RandomState | ModuleType
) -> np.ndarray:
    n = x.shape[0]
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.argsort(x)] = np.arange(1, n + 1)
    augmented = np.column_stack([ranks / n, np.ones(n)])
    weights = draw.normal(0.0, s, size=(2, min(k, n)))
    return np.column_stack([np.sin(augmented @ weights), np.ones(n)])


def _largest_canonical_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Largest canonical correlation, as R's `cancor`: centre, QR, SVD of Q_aᵀ Q_b."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    # The leading columns of the economic QR equal those of the full QR the reference uses.
    qa = np.linalg.qr(a)[0][:, : np.linalg.matrix_rank(a)]
    qb = np.linalg.qr(b)[0][:, : np.linalg.matrix_rank(b)]
    return float(np.linalg.svd(qa.T @ qb, compute_uv=False)[0])


def _single_threaded_blas() -> threadpool_limits:
    # The matrices here are thin ([n, k + 1]); a multi-threaded BLAS gains nothing on them and,
    # on a busy machine, its spinning threads made each QR about 100 times slower.
    return threadpool_limits(limits=1, user_api="blas")


def _cholesky(matrix: np.ndarray, name: str) -> np.ndarray:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise DataError(f"{name} must be a square matrix, got shape {matrix.shape}")
    try:
        return np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError as err:
        raise DataError(f"{name} is not positive definite") from err
