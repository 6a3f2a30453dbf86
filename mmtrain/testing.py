"""Conformance checks for plugin authors: call them from your own tests.

    from mmtrain.testing import check_aggregator, check_modality

    def test_my_aggregator():
        check_aggregator(MyPooling, hidden_size=16)

    def test_my_modality():
        check_modality(MySignal(length=16), good_cells=[[0.5] * 16], bad_cells=["text", [1.0]])

Each check raises `AssertionError` naming the check and what broke (an exception inside a
check is reported the same way). The functions return a `Report` of the checks that ran and
of those skipped, with the reason. Every built-in plugin passes them in mmtrain's test suite.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmtrain.aggregation import Aggregator
from mmtrain.errors import DataError
from mmtrain.likelihoods import BernoulliLikelihood, CategoricalLikelihood, Likelihood
from mmtrain.modality import Modality, ModalityPlugin
from mmtrain.priors import Prior, build_prior
from mmtrain.registry import AGGREGATORS, MODALITIES, isolated

__all__ = [
    "Report",
    "check_aggregator",
    "check_modality",
    "isolated_registry",
    "per_cell_decoding",
]

#: restores every registry on exit, so a test may register throw-away plugins
isolated_registry = isolated


@contextmanager
def per_cell_decoding(kinds: Sequence[str] | None = None) -> Iterator[dict[str, type]]:
    """Within the block, the modality `kinds` (default: every registered kind with a
    `decode_batch`) are registered as subclasses with `decode_batch = None`, so the loader
    decodes them one `decode_cell` call per cell: the reference a plugin's whole-chunk path
    must match, through the same `build_loader` path. Yields {kind: per-cell class}."""
    if kinds is None:
        kinds = [
            kind
            for kind in MODALITIES.names()
            if getattr(MODALITIES.get(kind), "decode_batch", None)
        ]
    originals = {kind: MODALITIES.get(kind) for kind in kinds}
    per_cell = {
        kind: type(f"PerCell{cls.__name__}", (cls,), {"decode_batch": None})
        for kind, cls in originals.items()
    }
    try:
        for kind, cls in per_cell.items():
            MODALITIES.register(kind, cls, override=True)
        yield per_cell
    finally:
        for kind, cls in originals.items():
            MODALITIES.register(kind, cls, override=True)


@dataclass
class Report:
    """What a conformance run checked (`passed`) and what it could not (`skipped`)."""

    plugin: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{self.plugin}: {len(self.passed)} checks passed"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


class _Checks:
    """Runs named checks; any failure becomes an AssertionError naming plugin and check."""

    def __init__(self, plugin: str) -> None:
        self.report = Report(plugin)

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as error:
            raise AssertionError(f"{self.report.plugin} fails '{name}': {error}") from error
        except Exception as error:  # noqa: BLE001 - any crash is a conformance failure
            raise AssertionError(
                f"{self.report.plugin} fails '{name}': raised {type(error).__name__}: {error}"
            ) from error
        self.report.passed.append(name)

    def skip(self, name: str, reason: str) -> None:
        self.report.skipped[name] = reason


@contextmanager
def _float32_default() -> Iterator[None]:
    """Modules are built in float32 (as cells are), whatever the caller's default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().nan_to_num(float("inf")).max())


def _close(a: Tensor, b: Tensor, rtol: float, atol: float) -> bool:
    return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=rtol, atol=atol))


def _safetensors_round_trip(module: nn.Module, fresh: nn.Module) -> nn.Module:
    from safetensors.torch import load_model, save_model

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "state.safetensors")
        save_model(module, path)
        missing, unexpected = load_model(fresh, path, strict=False)
    assert not missing and not unexpected, (
        f"state dict does not round-trip: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
    )
    return fresh


# ---------------------------------------------------------------------------------------------
# aggregators


def check_aggregator(
    aggregator: type[Aggregator] | str,
    *,
    latent_dim: int = 3,
    num_modalities: int = 4,
    num_components: int = 1,
    family: str = "normal",
    batch_size: int = 6,
    **options: object,
) -> Report:
    """Check an aggregator class (or registered name) built with `options`.

    Checks: the output distribution's shapes; invariance to permutations of the modality
    axis; blindness to masked rows (filled with large values, NaN, +inf and −inf: the
    posterior's log-density at fixed points and its mean must not change, with `forward`
    and `forward_pair` alike); that present rows matter; a finite, data-independent
    posterior for the empty set; `forward_pair` equals two `forward` calls; a finite non-zero
    gradient for every parameter; float32 and bfloat16 against float64, and CUDA when
    available; a state-dict round trip through safetensors.
    """
    with _float32_default():
        return _check_aggregator(
            aggregator,
            latent_dim,
            num_modalities,
            num_components,
            family,
            batch_size,
            options,
        )


@dataclass
class _AggregatorCase:
    """What the aggregator checks share: a float64 aggregator and its prior, features `h`
    [B, M, F], a mask [B, M], points `z` [3, B, d], the generator that supplies later draws
    (in a fixed order), and the reference log q(z|x_S) once the first check has computed it."""

    make: Callable[[int], tuple[Aggregator, Prior]]
    agg: Aggregator
    prior: Prior
    h: Tensor
    mask: Tensor
    z: Tensor
    gen: torch.Generator
    reference: Tensor = field(init=False)

    def density(self, module: Aggregator, features: Tensor, mask: Tensor) -> Tensor:
        return module(features, mask, self.prior).log_prob(self.z.to(features))


def _check_aggregator(
    aggregator: type[Aggregator] | str,
    latent_dim: int,
    num_modalities: int,
    num_components: int,
    family: str,
    batch_size: int,
    options: dict[str, object],
) -> Report:
    cls = AGGREGATORS.get(aggregator) if isinstance(aggregator, str) else aggregator
    name = aggregator if isinstance(aggregator, str) else getattr(cls, "__name__", str(cls))
    checks = _Checks(f"aggregator {name}")
    with checks.check("interface"):
        assert isinstance(cls, type) and issubclass(cls, Aggregator), (
            f"{cls!r} must subclass mmtrain.aggregation.Aggregator"
        )
    feature_dim = cls.required_feature_dim(latent_dim) or 8

    def make(seed: int) -> tuple[Aggregator, Prior]:
        torch.manual_seed(seed)
        agg = cls(feature_dim, latent_dim, num_components=num_components, family=family, **options)
        prior = build_prior(latent_dim, num_components, family)
        return agg.double(), prior.double()

    with checks.check("construction"):
        agg, prior = make(0)
        assert isinstance(agg, nn.Module), "an aggregator must be an nn.Module"
    case = _aggregator_case(make, agg, prior, (batch_size, num_modalities, feature_dim), latent_dim)
    _check_output(checks, case)
    _check_permutation_invariance(checks, case)
    _check_blind_to_masked_rows(checks, case)
    _check_uses_present_rows(checks, case)
    _check_empty_set(checks, case)
    _check_forward_pair(checks, case)
    _check_aggregator_gradients(checks, case)
    _aggregator_dtypes(checks, agg, prior, case.h, case.mask, case.z, case.reference)
    _check_aggregator_round_trip(checks, case)
    return checks.report


def _aggregator_case(
    make: Callable[[int], tuple[Aggregator, Prior]],
    agg: Aggregator,
    prior: Prior,
    shape: tuple[int, int, int],
    latent_dim: int,
) -> _AggregatorCase:
    """Features, a mask with a fully observed row, a one-modality row and no empty row, and
    points z, drawn from a generator seeded with 1."""
    batch_size, num_modalities, _ = shape
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(*shape, generator=gen, dtype=torch.float64)
    mask = torch.rand(batch_size, num_modalities, generator=gen) < 0.6
    mask[0] = True
    mask[1] = torch.arange(num_modalities) == 0
    mask[:, -1] |= ~mask.any(-1)
    z = torch.randn(3, batch_size, latent_dim, generator=gen, dtype=torch.float64)
    return _AggregatorCase(make, agg, prior, h, mask, z, gen)


def _check_output(checks: _Checks, case: _AggregatorCase) -> None:
    batch_size, latent_dim = case.z.shape[1:]
    with checks.check("output"):
        q = case.agg(case.h, case.mask, case.prior)
        sample = q.rsample(2)
        assert tuple(sample.shape) == (2, batch_size, latent_dim), (
            f"rsample(2) has shape {tuple(sample.shape)}, expected (2, {batch_size}, {latent_dim})"
        )
        log_q = q.log_prob(case.z)
        assert tuple(log_q.shape) == (3, batch_size), (
            f"log_prob of z [3, B, d] has shape {tuple(log_q.shape)}, expected (3, {batch_size})"
        )
        assert torch.isfinite(log_q).all() and torch.isfinite(sample).all(), "non-finite output"
        assert tuple(q.mean.shape) == (batch_size, latent_dim), "mean must be [B, d]"
        assert _close(q.detached().log_prob(case.z), log_q, 1e-12, 1e-12), "detached() changes q"


def _check_permutation_invariance(checks: _Checks, case: _AggregatorCase) -> None:
    num_modalities = case.mask.shape[1]
    with checks.check("permutation invariance"):
        case.reference = reference = case.density(case.agg, case.h, case.mask).detach()
        gen_perm = torch.Generator().manual_seed(2)
        perms = [torch.arange(num_modalities).flip(0)]
        perms += [torch.randperm(num_modalities, generator=gen_perm) for _ in range(3)]
        for perm in perms:
            permuted = case.density(case.agg, case.h[:, perm], case.mask[:, perm])
            assert _close(permuted, reference, 1e-7, 1e-7), (
                f"log q(z|x_S) changed by {_max_diff(permuted, reference):.3g} when the modality "
                f"axis was permuted by {perm.tolist()}"
            )


def _check_blind_to_masked_rows(checks: _Checks, case: _AggregatorCase) -> None:
    agg, prior, h, mask, z = case.agg, case.prior, case.h, case.mask, case.z
    reference = case.reference
    shape = tuple(h.shape)
    with checks.check("blind to masked rows"):
        fills = {
            "large values": 1e3 * torch.randn(*shape, generator=case.gen, dtype=torch.float64),
            "NaN": torch.full(shape, float("nan"), dtype=torch.float64),
            "+inf": torch.full(shape, float("inf"), dtype=torch.float64),
            "-inf": torch.full(shape, float("-inf"), dtype=torch.float64),
        }
        reference_mean = agg(h, mask, prior).mean.detach()
        # A random subset that keeps each row's first present modality (the empty set has
        # its own check).
        keep = torch.rand(mask.shape, generator=case.gen) < 0.5
        subset = mask & (keep | (mask.cumsum(-1) == 1))
        pair_reference = [q.log_prob(z).detach() for q in agg.forward_pair(h, mask, subset, prior)]
        for what, fill in fills.items():
            filled = torch.where(mask[..., None], h, fill)
            q_filled = agg(filled, mask, prior)
            changed = q_filled.log_prob(z)
            assert _close(changed, reference, 1e-7, 1e-7), (
                f"log q(z|x_S) changed by {_max_diff(changed, reference):.3g} when the features "
                f"of masked modalities were {what}"
            )
            assert _close(q_filled.mean, reference_mean, 1e-7, 1e-7), (
                f"the mean of q(z|x_S) changed by {_max_diff(q_filled.mean, reference_mean):.3g}"
                f" when the features of masked modalities were {what}"
            )
            pair = [q.log_prob(z) for q in agg.forward_pair(filled, mask, subset, prior)]
            for label, got, want in zip(("full", "subset"), pair, pair_reference):
                assert _close(got, want, 1e-7, 1e-7), (
                    f"forward_pair's {label} posterior changed by {_max_diff(got, want):.3g} "
                    f"when the features of masked modalities were {what}"
                )


def _check_uses_present_rows(checks: _Checks, case: _AggregatorCase) -> None:
    mask = case.mask
    with checks.check("uses present rows"):
        moved = case.density(case.agg, torch.where(mask[..., None], case.h + 1.0, case.h), mask)
        differs = ~torch.isclose(moved, case.reference).all(0)
        observed = mask.any(-1)
        assert differs[observed].all(), (
            "changing the features of present modalities left q(z|x_S) unchanged for rows "
            f"{torch.nonzero(observed & ~differs).flatten().tolist()}"
        )


def _check_empty_set(checks: _Checks, case: _AggregatorCase) -> None:
    with checks.check("empty set"):
        empty = torch.zeros_like(case.mask)
        q_empty = case.agg(case.h, empty, case.prior)
        first = q_empty.log_prob(case.z)
        assert torch.isfinite(first).all(), "log q(z|∅) is not finite"
        assert torch.isfinite(q_empty.rsample(2)).all(), "samples of q(z|∅) are not finite"
        second = case.density(case.agg, 50 * torch.randn_like(case.h), empty)
        assert _close(first, second, 1e-7, 1e-7), "q(z|∅) depends on the (masked) features"


def _check_forward_pair(checks: _Checks, case: _AggregatorCase) -> None:
    agg, h, mask = case.agg, case.h, case.mask
    with checks.check("forward_pair"):
        subset = mask & (torch.rand(mask.shape, generator=case.gen) < 0.5)
        q_full, q_subset = agg.forward_pair(h, mask, subset, case.prior)
        assert _close(q_full.log_prob(case.z), case.reference, 1e-9, 1e-9), "full posterior differs"
        assert _close(q_subset.log_prob(case.z), case.density(agg, h, subset), 1e-9, 1e-9), (
            "subset posterior differs from forward(h, subset_mask)"
        )


def _check_aggregator_gradients(checks: _Checks, case: _AggregatorCase) -> None:
    agg, prior, mask, z = case.agg, case.prior, case.mask, case.z
    with checks.check("gradients"):
        agg.zero_grad()
        features = case.h.clone().requires_grad_(True)
        loss = -agg(features, mask, prior).log_prob(z).sum()
        loss = loss - agg(features, torch.zeros_like(mask), prior).log_prob(z).sum()
        loss = loss + agg(features, mask, prior).rsample(1).pow(2).sum()
        loss.backward()
        bad = [
            pname
            for pname, param in agg.named_parameters()
            if param.requires_grad
            and (
                param.grad is None
                or not torch.isfinite(param.grad).all()
                or not param.grad.abs().sum() > 0
            )
        ]
        assert not bad, f"parameters without a finite non-zero gradient: {bad}"
        grad = features.grad
        assert grad is not None and torch.isfinite(grad).all(), "non-finite gradient to h"
        assert (grad[~mask] == 0).all(), "masked features receive gradient"
        assert (grad[mask].abs().sum(-1) > 0).all(), "some present features get no gradient"


def _check_aggregator_round_trip(checks: _Checks, case: _AggregatorCase) -> None:
    with checks.check("safetensors round trip"):
        fresh, _ = case.make(1234)
        fresh = _safetensors_round_trip(case.agg, fresh)
        assert _close(case.density(fresh, case.h, case.mask), case.reference, 0, 0), (
            "a reloaded aggregator gives a different posterior: some state is not in the "
            "state dict (non-persistent buffer or plain attribute?)"
        )


def _aggregator_dtypes(
    checks: _Checks,
    agg: Aggregator,
    prior: Prior,
    h: Tensor,
    mask: Tensor,
    z: Tensor,
    reference: Tensor,
) -> None:
    scale = 1 + reference.abs()
    runs: list[tuple[str, torch.dtype, str, float]] = [
        ("float32", torch.float32, "cpu", 1e-4),
        ("bfloat16", torch.bfloat16, "cpu", 0.1),
    ]
    if torch.cuda.is_available():
        runs += [("cuda float32", torch.float32, "cuda", 1e-4)]
        runs += [("cuda bfloat16", torch.bfloat16, "cuda", 0.1)]
    else:
        checks.skip("cuda", "no CUDA device")
    for label, dtype, device, tolerance in runs:
        with checks.check(label):
            module = copy.deepcopy(agg).to(device=device, dtype=dtype)
            p = copy.deepcopy(prior).to(device=device, dtype=dtype)
            q = module(h.to(device, dtype), mask.to(device), p)
            assert q.mean.dtype == dtype, f"posterior has dtype {q.mean.dtype}, expected {dtype}"
            assert q.mean.device.type == device, f"posterior is on {q.mean.device}"
            log_q = q.log_prob(z.to(device, dtype)).detach().double().cpu()
            assert torch.isfinite(log_q).all(), "non-finite log q"
            error = float(((log_q - reference).abs() / scale).max())
            assert error <= tolerance, (
                f"log q differs from float64 by {error:.3g} (relative), more than {tolerance}"
            )


# ---------------------------------------------------------------------------------------------
# modalities


def _support(likelihood: Likelihood) -> str | None:
    declared = getattr(likelihood, "support", None)
    if declared:
        return str(declared)
    if isinstance(likelihood, CategoricalLikelihood):
        return "categorical"
    if isinstance(likelihood, BernoulliLikelihood):
        return "binary"
    if hasattr(likelihood, "split"):
        return "continuous"
    return None


def check_modality(
    plugin: ModalityPlugin,
    good_cells: Sequence[object],
    bad_cells: Sequence[object],
    *,
    feature_dim: int = 6,
    latent_dim: int = 3,
    samples: int = 2,
) -> Report:
    """Check a configured modality plugin with cells it must accept and cells it must reject.

    Checks: JSON-safe options that rebuild the plugin, and its registration; `decode_cell`
    on every good cell (a finite tensor of `event_shape`) and every bad cell (`DataError`);
    encoder `[B, *event] → [B, F]`; decoder `[B, d] → [B, P]` and `[L, B, d] → [L, B, P]`
    with samples kept apart; finite `log_prob` of shape `[B]` and `[L, B]`; gradients to every
    parameter; normalisation where it can be checked (categorical probabilities sum to one and
    match `log_prob`; a 1-element continuous density integrates to one on a grid; a binary
    event of at most 12 elements sums to one); `preview` of a cell and of a decoder mean; a
    safetensors round trip and a rebuild from `options()`.
    """
    with _float32_default():
        return _check_modality(plugin, good_cells, bad_cells, feature_dim, latent_dim, samples)


@dataclass
class _ModalityCase:
    """What the modality checks share: the plugin, the built modality, a batch `x` of decoded
    good cells, points `z` [L, B, d], and the decoder's outputs for `z[0]` (`params`) and `z`
    (`many`) once the decoder check has made them."""

    plugin: ModalityPlugin
    modality: Modality
    x: Tensor
    z: Tensor
    feature_dim: int
    latent_dim: int
    params: Tensor = field(init=False)
    many: Tensor = field(init=False)


def _check_modality(
    plugin: ModalityPlugin,
    good_cells: Sequence[object],
    bad_cells: Sequence[object],
    feature_dim: int,
    latent_dim: int,
    samples: int,
) -> Report:
    kind = getattr(plugin, "kind", "") or type(plugin).__name__
    checks = _Checks(f"modality {kind}")
    event_shape = _check_modality_interface(checks, plugin, good_cells, bad_cells)
    _check_options(checks, plugin, event_shape)
    _check_registration(checks, plugin)
    decoded = _check_decode_good_cells(checks, plugin, good_cells, event_shape)
    _check_decode_bad_cells(checks, plugin, bad_cells)

    torch.manual_seed(0)
    with checks.check("build"):
        modality = plugin.build(feature_dim, latent_dim)
        assert isinstance(modality, Modality), "build() must return a Modality"
        assert tuple(modality.event_shape) == event_shape, "likelihood event != event_shape"
    x = torch.stack((decoded * 2)[: max(2, len(decoded))])
    z = torch.randn(samples, x.shape[0], latent_dim)
    case = _ModalityCase(plugin, modality, x, z, feature_dim, latent_dim)
    _check_encoder(checks, case)
    _check_decoder(checks, case)
    _check_log_prob(checks, case)
    _check_modality_gradients(checks, case)
    _normalisation(checks, modality, case.params.detach(), x)
    _check_preview(checks, case)
    _check_modality_round_trip(checks, case)
    return checks.report


def _check_modality_interface(
    checks: _Checks,
    plugin: ModalityPlugin,
    good_cells: Sequence[object],
    bad_cells: Sequence[object],
) -> tuple[int, ...]:
    with checks.check("interface"):
        assert isinstance(plugin, ModalityPlugin), "plugins must subclass ModalityPlugin"
        assert good_cells, "give at least one good cell"
        assert bad_cells, "give at least one bad cell"
        event_shape = tuple(plugin.event_shape)
        assert all(isinstance(s, int) and s > 0 for s in event_shape), (
            f"event_shape must be positive ints, got {event_shape}"
        )
    return event_shape


def _check_options(checks: _Checks, plugin: ModalityPlugin, event_shape: tuple[int, ...]) -> None:
    with checks.check("options"):
        options = plugin.options()
        text = json.dumps(options)
        rebuilt = type(plugin)(**json.loads(text))
        assert rebuilt.options() == options, "type(plugin)(**options()) has other options"
        assert tuple(rebuilt.event_shape) == event_shape, "a rebuilt plugin has another event"


def _check_registration(checks: _Checks, plugin: ModalityPlugin) -> None:
    if plugin.kind and plugin.kind in MODALITIES:
        with checks.check("registration"):
            assert MODALITIES.get(plugin.kind) is type(plugin), (
                f"MODALITIES[{plugin.kind!r}] is {MODALITIES.get(plugin.kind)!r}, not "
                f"{type(plugin)!r}"
            )
    else:
        checks.skip("registration", f"{plugin.kind!r} is not registered")


def _check_decode_good_cells(
    checks: _Checks,
    plugin: ModalityPlugin,
    good_cells: Sequence[object],
    event_shape: tuple[int, ...],
) -> list[Tensor]:
    decoded = []
    with checks.check("decode good cells"):
        for index, cell in enumerate(good_cells):
            try:
                x = plugin.decode_cell(cell)
            except DataError as error:
                raise AssertionError(f"good cell {index} was rejected: {error}") from error
            assert isinstance(x, Tensor), f"good cell {index} gave {type(x).__name__}"
            assert tuple(x.shape) == event_shape, (
                f"good cell {index} gave shape {tuple(x.shape)}, expected {event_shape}"
            )
            assert x.dtype == plugin.dtype, f"good cell {index} gave {x.dtype}"
            assert torch.isfinite(x).all(), f"good cell {index} gave non-finite values"
            decoded.append(x)
    return decoded


def _check_decode_bad_cells(
    checks: _Checks, plugin: ModalityPlugin, bad_cells: Sequence[object]
) -> None:
    with checks.check("decode bad cells"):
        for index, cell in enumerate(bad_cells):
            try:
                plugin.decode_cell(cell)
            except DataError as error:
                assert str(error).strip(), f"bad cell {index} raised a DataError with no message"
                continue
            except Exception as error:  # noqa: BLE001
                raise AssertionError(
                    f"bad cell {index} ({cell!r:.60}) raised {type(error).__name__}, not "
                    f"DataError: {error}"
                ) from error
            raise AssertionError(f"bad cell {index} ({cell!r:.60}) was accepted")


def _check_encoder(checks: _Checks, case: _ModalityCase) -> None:
    x, batch, feature_dim = case.x, case.x.shape[0], case.feature_dim
    with checks.check("encoder"):
        h = case.modality.encode(x)
        assert tuple(h.shape) == (batch, feature_dim), (
            f"encoder gave {tuple(h.shape)} for {tuple(x.shape)}, expected ({batch}, {feature_dim})"
        )
        assert torch.isfinite(h).all(), "encoder output is not finite"


def _check_decoder(checks: _Checks, case: _ModalityCase) -> None:
    modality, z = case.modality, case.z
    samples, batch = z.shape[:2]
    num_params = modality.likelihood.num_params
    with checks.check("decoder"):
        case.params = params = modality.decode(z[0])
        assert tuple(params.shape) == (batch, num_params), (
            f"decoder gave {tuple(params.shape)} for z {tuple(z[0].shape)}, expected "
            f"({batch}, {num_params})"
        )
        case.many = many = modality.decode(z)
        assert tuple(many.shape) == (samples, batch, num_params), (
            f"decoder gave {tuple(many.shape)} for z {tuple(z.shape)}, expected "
            f"({samples}, {batch}, {num_params})"
        )
        for sample in range(samples):
            assert _close(many[sample], modality.decode(z[sample]), 1e-5, 1e-5), (
                "decoding [L, B, d] mixes samples: decode(z)[l] != decode(z[l])"
            )


def _check_log_prob(checks: _Checks, case: _ModalityCase) -> None:
    samples, batch = case.z.shape[:2]
    with checks.check("log_prob"):
        single = case.modality.log_prob(case.params, case.x)
        assert tuple(single.shape) == (batch,), f"log_prob gave {tuple(single.shape)}"
        multi = case.modality.log_prob(case.many, case.x)
        assert tuple(multi.shape) == (samples, batch), f"log_prob gave {tuple(multi.shape)}"
        assert torch.isfinite(single).all() and torch.isfinite(multi).all(), "non-finite"


def _check_modality_gradients(checks: _Checks, case: _ModalityCase) -> None:
    modality, x = case.modality, case.x
    with checks.check("gradients"):
        modality.zero_grad()
        loss = modality.encode(x).pow(2).sum() - modality.log_prob(modality.decode(case.z), x).sum()
        loss.backward()
        bad = [
            pname
            for pname, param in modality.named_parameters()
            if param.requires_grad and (param.grad is None or not torch.isfinite(param.grad).all())
        ]
        assert not bad, f"parameters without a finite gradient: {bad}"


def _check_preview(checks: _Checks, case: _ModalityCase) -> None:
    with checks.check("preview"):
        _assert_preview(case.plugin.preview(case.x[0]), "a decoded cell")
        mean = getattr(case.modality.likelihood, "mean", None)
        if mean is not None:
            try:
                decoded_mean = mean(case.params.detach())[0]
            except NotImplementedError:
                decoded_mean = None
            if decoded_mean is not None:
                _assert_preview(case.plugin.preview(decoded_mean), "a decoder mean")


def _check_modality_round_trip(checks: _Checks, case: _ModalityCase) -> None:
    modality, plugin, x, z = case.modality, case.plugin, case.x, case.z
    with checks.check("safetensors round trip"):
        torch.manual_seed(1234)
        fresh = type(plugin)(**plugin.options()).build(case.feature_dim, case.latent_dim)
        shapes = {k: tuple(v.shape) for k, v in modality.state_dict().items()}
        fresh_shapes = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
        assert shapes == fresh_shapes, "a plugin rebuilt from options() has other parameters"
        fresh = _safetensors_round_trip(modality, fresh)
        with torch.no_grad():
            assert _close(fresh.decode(z), modality.decode(z), 0, 0), "reloaded decoder differs"
            assert _close(fresh.encode(x), modality.encode(x), 0, 0), "reloaded encoder differs"


def _assert_preview(shown: object, what: str) -> None:
    from PIL import Image

    if isinstance(shown, Image.Image):
        assert shown.width > 0 and shown.height > 0, f"preview of {what} is an empty image"
        shown.convert("RGB").tobytes()
        return
    assert isinstance(shown, str), (
        f"preview of {what} must be a PIL image or a string, got {type(shown).__name__}"
    )
    assert shown, f"preview of {what} is an empty string"


@torch.no_grad()
def _normalisation(checks: _Checks, modality: Modality, params: Tensor, x: Tensor) -> None:
    likelihood = modality.likelihood
    support = _support(likelihood)
    event_shape = tuple(likelihood.event_shape)
    size = math.prod(event_shape)
    name = "normalisation"
    if support == "categorical":
        with checks.check(name):
            probs = likelihood.mean(params)
            total = probs.sum(-1)
            assert _close(total, torch.ones_like(total), 1e-5, 1e-5), (
                f"categorical probabilities sum to {total.min():.6g}..{total.max():.6g}, not 1"
            )
            expected = (x * torch.log(probs)).reshape(x.shape[0], -1).sum(-1)
            actual = likelihood.log_prob(params, x)
            assert _close(actual, expected, 1e-4, 1e-4), (
                f"log_prob differs from log of the probabilities by {_max_diff(actual, expected):.3g}"
            )
    elif support == "continuous" and size == 1:
        with checks.check(name):
            module = copy.deepcopy(likelihood).double()
            one = params[:1].double()
            try:
                center = float(module.mean(one).flatten()[0])
            except NotImplementedError:
                center = 0.0
            grid = torch.linspace(center - 60, center + 60, 240_001, dtype=torch.float64)
            values = module.log_prob(one.expand(len(grid), -1), grid.reshape(-1, *event_shape))
            integral = float(torch.trapezoid(values.exp(), grid))
            assert abs(integral - 1) < 1e-2, f"the density integrates to {integral:.4f}, not 1"
    elif support == "binary" and size <= 12:
        with checks.check(name):
            codes = torch.arange(2**size)
            bits = ((codes[:, None] >> torch.arange(size)) & 1).to(params.dtype)
            values = likelihood.log_prob(
                params[:1].expand(len(codes), -1), bits.reshape(-1, *event_shape)
            )
            total = float(values.double().exp().sum())
            assert abs(total - 1) < 1e-4, f"probabilities of all {2**size} outcomes sum to {total}"
    elif support == "sequence" and len(event_shape) == 2 and size <= 12 and params.shape[0]:
        with checks.check(name):
            length, symbols = event_shape
            codes = torch.arange(symbols**length)
            digits = torch.stack([(codes // symbols**t) % symbols for t in range(length)], -1)
            strings = torch.nn.functional.one_hot(digits, symbols).to(params.dtype)
            values = likelihood.log_prob(params[:1].expand(len(codes), -1), strings)
            total = float(values.double().exp().sum())
            assert abs(total - 1) < 1e-4, (
                f"probabilities of all {len(codes)} strings sum to {total}"
            )
    else:
        checks.skip(
            name,
            f"not checkable for a {support or 'unknown'} event of {size} elements (the kit "
            "checks categorical events, 1-element continuous, small binary and small sequence "
            "events)",
        )
