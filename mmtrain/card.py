"""The model card (`README.md`) of an exported bundle: Hugging Face front matter
(library_name, tags, license, datasets), how to load the model, the training summary, the
evaluation of the run (headline table and pictures, copied into the bundle), the plugins
with their versions, and the config. `mmtrain export` writes it into every bundle, so a
bundle describes itself on disk and on the Hub alike."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmtrain.errors import CheckpointError

if TYPE_CHECKING:  # bundle imports this module to write the card
    from mmtrain.bundle import ModelSource

CARD_FILE = "README.md"
#: the folder of the bundle that holds the evaluation's pictures
PICTURES_DIR = "pictures"
#: the folder `mmtrain eval` writes into by default, under the run directory
EVAL_DIR = "eval"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
    return data if isinstance(data, dict) else None


def hub_dataset(data: Mapping[str, Any]) -> str | None:
    """The Hub dataset a config trained on, or None when it is embedded or local: the
    source is taken for a Hub id when it is `ORG/NAME`, not a path and not a folder here."""
    from mmtrain.data.embedded import is_embedded
    from mmtrain.data.sources import _looks_like_path

    name = str(data.get("source", "")).strip()
    if not name or is_embedded(name) or _looks_like_path(name) or name.count("/") != 1:
        return None
    return None if Path(name).expanduser().exists() else name


def _tags(config: Mapping[str, Any], signature: Mapping[str, Any]) -> list[str]:
    kinds = sorted({spec["kind"] for spec in signature.get("modalities", {}).values()})
    model = config.get("model", {})
    tags = ["mmtrain", "multimodal", "vae", model.get("aggregator"), model.get("objective")]
    return [str(tag) for tag in dict.fromkeys(tags + kinds) if tag]


def _front_matter(
    config: Mapping[str, Any], signature: Mapping[str, Any], license_id: str | None
) -> str:
    from huggingface_hub import ModelCardData

    dataset = hub_dataset(config.get("data", {}))
    data = ModelCardData(
        library_name="mmtrain",
        tags=_tags(config, signature),
        license=license_id,
        datasets=[dataset] if dataset else None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _load_section(repo_id: str | None) -> str:
    where = f"hf://{repo_id}" if repo_id else "path/to/this/folder"
    note = (
        "`mmtrain.load` downloads the weights (`model.safetensors`) and the model description "
        "(`config.json`) into the Hugging Face cache and reads nothing else: no pickle, no "
        "code from the repository. The plugins below must be installed."
        if repo_id
        else "After `mmtrain export RUN DIR --push-to-hub ORG/NAME` it loads from "
        '`"hf://ORG/NAME"`. Only `model.safetensors` and `config.json` are read.'
    )
    return (
        "## How to load\n\n"
        "```python\n"
        "import mmtrain\n\n"
        f'model = mmtrain.load("{where}")\n'
        "print(model)  # aggregator, objective, modalities, latent size\n"
        "drawn = model.sample(4)  # decoder means of prior draws, per modality\n"
        "```\n\n"
        f"{note}\n"
    )


def _training_section(summary: Mapping[str, Any], step: int | None) -> str:
    from mmtrain.report import TRAINING_LABELS, markdown_table

    rows = [
        [label.strip(), f"{summary[key]:.4f}" if isinstance(summary[key], float) else summary[key]]
        for label, key in TRAINING_LABELS
        if summary.get(key) is not None
    ]
    lines = ["## Training", ""]
    best = summary.get("best_checkpoint")
    if isinstance(best, Mapping) and best.get("step") == step:
        lines.append(
            f"The exported weights are the run's best checkpoint (step {step}, "
            f"{best['metric']} = {best['value']:.6g})."
        )
    elif step is not None:
        lines.append(f"The exported weights are those of step {step}.")
    if summary.get("stop_reason"):
        lines.append(f"Training stopped early: {summary['stop_reason']}")
    lines += ["", markdown_table(["metric (per example)", "value"], rows), ""]
    return "\n".join(lines)


def _copy_pictures(results: Mapping[str, Any], eval_dir: Path, folder: Path) -> list[str]:
    from mmtrain.evaluation.markdown import PICTURES

    titles = {name: title for name, title, _ in PICTURES}
    lines = []
    for name, file in results.get("pictures", {}).items():
        picture = eval_dir / file
        if not picture.is_file():
            continue
        (folder / PICTURES_DIR).mkdir(exist_ok=True)
        shutil.copyfile(picture, folder / PICTURES_DIR / picture.name)
        title = titles.get(name, name.replace("_", " ").capitalize())
        lines += [f"### {title}", "", f"![{title}]({PICTURES_DIR}/{picture.name})", ""]
    return lines


def _evaluation_section(
    results: dict[str, Any], eval_dir: Path, folder: Path, step: int | None
) -> str:
    from mmtrain.evaluation.markdown import UNTRUSTED, summary_section

    data = results.get("data", {})
    lines = ["## Evaluation", ""]
    if results.get("step") is not None and results["step"] != step:
        lines.append(
            f"These numbers are of step {results['step']}, not of the exported step {step}."
        )
    if data.get("note"):
        lines.append(f"`mmtrain eval` on `{data.get('source')}`: {data['note']}.")
    for warning in results.get("warnings", ()):
        lines += ["", f"> **Warning:** {warning}."]
    if results.get("untrusted"):
        lines += ["", f"Figures marked {UNTRUSTED} rest on a classifier below the trust threshold."]
    lines += ["", summary_section(results), ""]
    lines += _copy_pictures(results, eval_dir, folder)
    return "\n".join(lines)


def _plugins_section(plugins: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    import torch

    from mmtrain._version import __version__
    from mmtrain.report import markdown_table

    rows = [
        [kind, name, record.get("package"), record.get("version")]
        for kind, names in plugins.items()
        for name, record in names.items()
    ]
    table = markdown_table(["kind", "name", "package", "version"], rows, align=["l"] * 4)
    return (
        "## Plugins and versions\n\n"
        f"Exported with mmtrain {__version__} and torch {torch.__version__}. The plugins the "
        f"model was trained with:\n\n{table}\n"
    )


def _config_section(config: Mapping[str, Any]) -> str:
    text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
    return f"## Config\n\nThe resolved training config:\n\n```yaml\n{text}```\n"


def _eval_results(source: ModelSource, eval_dir: Path | None) -> tuple[dict | None, Path | None]:
    if eval_dir is not None:
        results = _read_json(eval_dir / "metrics.json")
        if results is None:
            raise CheckpointError(
                f"{eval_dir} holds no metrics.json; give the --out folder of `mmtrain eval`"
            )
        return results, eval_dir
    run_dir = source.run_dir
    if run_dir is None:
        return None, None
    default = run_dir / EVAL_DIR
    return _read_json(default / "metrics.json"), default


def write_model_card(
    folder: Path,
    source: ModelSource,
    *,
    repo_id: str | None = None,
    license_id: str | None = None,
    eval_dir: Path | None = None,
) -> Path:
    """Write `README.md` (and the evaluation's pictures under `pictures/`) into the bundle
    `folder` for the model `source`, with the run's `summary.json` and the evaluation in
    `eval_dir` (default: the run's `eval/` when it has a `metrics.json`). `repo_id` goes into
    the loading example."""
    from huggingface_hub import ModelCard

    description = source.description
    config, signature = description["config"], description["model_signature"]
    model = config.get("model", {})
    title = repo_id.split("/")[-1] if repo_id else "mmtrain model"
    modalities = ", ".join(
        f"`{name}` ({spec['kind']})" for name, spec in signature.get("modalities", {}).items()
    )
    parts = [
        f"# {title}\n\n"
        f"A multi-modal VAE trained with mmtrain: the `{model.get('aggregator')}` aggregator, "
        f"the `{model.get('objective')}` objective, a latent space of "
        f"{model.get('latent_dim')} dimensions, and the modalities {modalities}. "
        f"Trained on `{config.get('data', {}).get('source')}`.\n",
        _load_section(repo_id),
    ]
    summary = _read_json(source.run_dir / "summary.json") if source.run_dir else None
    if summary is not None:
        parts.append(_training_section(summary, source.step))
    results, found = _eval_results(source, eval_dir)
    if results is not None and found is not None:
        parts.append(_evaluation_section(results, found, folder, source.step))
    parts.append(_plugins_section(description.get("plugins", {})))
    parts.append(_config_section(config))
    card = ModelCard(_front_matter(config, signature, license_id) + "\n" + "\n".join(parts))
    card.save(folder / CARD_FILE)
    return folder / CARD_FILE
