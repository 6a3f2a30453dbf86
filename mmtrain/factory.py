"""The one model factory: a config's model section and the modality plugins → a
`MultiModalVAE`; the model signature a checkpoint records; the compatibility check and the
plugin provenance that go with it.

Training, bundles, evaluation, benchmarks and the conformance kit all build models here.
Facts that belong to a plugin (the feature size an aggregator needs, its options for a
width, its largest number of mixture components) are asked of the plugin class, so this
module names no plugin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtrain.errors import CheckpointError, ConfigError, MMTrainError
from mmtrain.modality import ModalityPlugin, create_modality
from mmtrain.model import MultiModalVAE
from mmtrain.nets import initialise
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, OBJECTIVES, provenance

if TYPE_CHECKING:
    from mmtrain.config import ModelSection
    from mmtrain.data.config import ModalitySpec


def aggregator_options(model: ModelSection) -> dict[str, Any]:
    """The aggregator's keyword options: those the plugin derives from
    `model.aggregator_width`, overridden by the explicit `model.aggregator_options`."""
    cls = AGGREGATORS.get(model.aggregator)
    options: dict[str, Any] = {}
    if model.aggregator_width is not None:
        options |= cls.options_for_width(model.aggregator_width)
    return options | dict(model.aggregator_options)


def feature_dim(model: ModelSection) -> int:
    """The size of the modality features h_s: what the aggregator needs (2d for experts),
    else `model.feature_dim`."""
    needed = AGGREGATORS.get(model.aggregator).required_feature_dim(model.latent_dim)
    return needed or model.feature_dim


def check_model(model: ModelSection) -> None:
    """Refuse combinations a plugin declares it cannot build."""
    cls = AGGREGATORS.get(model.aggregator)
    OBJECTIVES.get(model.objective)
    limit = cls.max_components
    if limit is not None and model.prior.components > limit:
        needs = "a single-component prior" if limit == 1 else f"at most {limit} components"
        raise ConfigError(
            f"{model.aggregator} needs {needs} but model.prior.components is "
            f"{model.prior.components}; set model.prior.components: {limit} (and "
            "model.prior.kind: fixed) or choose another aggregator"
        )


def build_model(model: ModelSection, plugins: Mapping[str, ModalityPlugin]) -> MultiModalVAE:
    """The model of a config's model section: plugin networks, the aggregator, the prior,
    initialised with `model.init`."""
    check_model(model)
    aggregator_cls = AGGREGATORS.get(model.aggregator)
    latent = model.latent_dim
    features = feature_dim(model)
    components = model.prior.components
    modalities = {name: plugin.build(features, latent) for name, plugin in plugins.items()}
    try:
        aggregator = aggregator_cls(
            features,
            latent,
            components,
            model.posterior_family,
            model.min_scale,
            **aggregator_options(model),
        )
    except TypeError as error:
        raise ConfigError(f"model.aggregator_options for {model.aggregator}: {error}") from None
    prior = build_prior(
        latent, components, model.prior.family, learned=model.prior.kind == "mixture"
    )
    vae = MultiModalVAE(modalities, aggregator, prior, model.reconstruction_weights)
    return initialise(vae, model.init)


def model_signature(
    model: ModelSection,
    modalities: Mapping[str, ModalitySpec],
    plugins: Mapping[str, ModalityPlugin],
    event_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """What a checkpoint must agree on to be loaded into a model: every modality's plugin
    kind and resolved options, the event shapes, the aggregator and its options, the latent
    and feature sizes, the prior and the posterior family."""
    return {
        "modalities": {
            name: {"kind": spec.kind, "options": _plugin_options(plugins[name], spec.options)}
            for name, spec in modalities.items()
        },
        "event_shapes": {name: list(shape) for name, shape in event_shapes.items()},
        "aggregator": model.aggregator,
        "aggregator_options": aggregator_options(model),
        "latent_dim": model.latent_dim,
        "feature_dim": model.feature_dim,
        "prior": {
            "kind": model.prior.kind,
            "components": model.prior.components,
            "family": model.prior.family,
        },
        "posterior_family": model.posterior_family,
    }


def plugins_from_signature(signature: Mapping[str, Any]) -> dict[str, ModalityPlugin]:
    """The configured modality plugins a signature describes (for loading a model without
    its training data)."""
    return {
        name: create_modality(spec["kind"], spec["options"])
        for name, spec in signature["modalities"].items()
    }


def _plugin_options(plugin: ModalityPlugin, fallback: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(plugin.options()))
    except NotImplementedError:
        return dict(fallback)


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose signature differs from the model's, naming what differs.
    Plugin options the checkpoint predates count as their defaults (a plugin option added
    later keeps its old behaviour by default)."""
    saved = {**saved, "modalities": _with_defaults(saved.get("modalities"))}
    differences = [
        f"{key}: checkpoint {saved.get(key)!r} vs config {value!r}"
        for key, value in current.items()
        if json.loads(json.dumps(saved.get(key))) != json.loads(json.dumps(value))
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was written for another model; " + "; ".join(differences[:3])
        )


def _with_defaults(modalities: Any) -> Any:
    """A signature's modalities with every plugin's options completed by its defaults; left
    as they are when a plugin cannot be built from them (the comparison then names them)."""
    if not isinstance(modalities, Mapping):
        return modalities
    completed = {}
    for name, spec in modalities.items():
        try:
            plugin = create_modality(spec["kind"], spec["options"])
            completed[name] = {**spec, "options": _plugin_options(plugin, spec["options"])}
        except (MMTrainError, LookupError, TypeError, ValueError):
            completed[name] = spec
    return completed


def plugin_provenance(signature: Mapping[str, Any], objective: str) -> dict[str, Any]:
    """Registry names and package versions of every plugin the model uses."""
    kinds = {spec["kind"] for spec in signature["modalities"].values()}
    return provenance(
        {"modality": kinds, "aggregator": [signature["aggregator"]], "objective": [objective]}
    )
