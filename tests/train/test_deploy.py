"""deploy/: every file parses, and every command line in it would be accepted.

- YAML: every document parses; Accelerate configs load with Accelerate's own loader (which
  rejects unknown keys); the Ray cluster config passes Ray's schema; the KubeRay RayJob is
  `ray.io/v1` with a GPU worker group, and the training config in its ConfigMap is a valid
  mmtrain config.
- Commands: every `mmtrain ...`, `accelerate launch ...` and `ray ...` command line found in
  shell scripts, YAML values, example comments and Markdown code blocks is parsed with the
  real parsers (`mmtrain.cli.build_parser()`, Accelerate's launch parser, Ray's click CLI).
  Shell variables become placeholder values first, so only names are checked.
- Shell scripts: `bash -n`, and `shellcheck` where it is installed (Debian's package).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shlex
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmtrain.cli import build_parser
from mmtrain.config import config_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SHELL_SUFFIXES = (".sh", ".sbatch")
#: a comment or code line is a command when it starts with one of these
EXECUTABLES = (
    "mmtrain", "accelerate", "ray", "python", "python3", "srun", "sbatch", "kubectl",
    "torchrun", "bash", "pip", "docker", "ulimit",
)  # fmt: skip
#: `mmtrain <word>` where mmtrain stands alone (not in a path, package name or file name)
MMTRAIN = re.compile(r"(?<![\w/.\-\[])mmtrain(?=\s+[A-Za-z])")
ACCELERATE = re.compile(r"(?<![\w/.\-])accelerate\s+launch(?=\s)")
RAY = re.compile(r"(?<![\w/.\-])ray\s+(?=(start|stop|up|down|dashboard|job|exec|submit|status)\b)")
OPERATORS = set(";&|<>")


@dataclass(frozen=True)
class Command:
    """One command found in a deploy file: where, and its arguments after the program."""

    path: Path
    line: str
    args: list[str]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}: {self.line.strip()[:160]}"


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def yaml_files() -> list[Path]:
    return [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]


def shell_scripts() -> list[Path]:
    return [p for p in deploy_files() if p.suffix in SHELL_SUFFIXES]


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _starts_a_command(text: str) -> bool:
    text = text.strip().removeprefix("$").strip()
    return text.split(" ", 1)[0] in EXECUTABLES


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def command_lines(path: Path) -> list[str]:
    """The lines of `path` that are (or contain) commands."""
    text = path.read_text()
    lines = _logical_lines(text)
    comments = [
        line.strip().lstrip("#") for line in lines if line.strip().startswith("#")
    ]  # fmt: skip
    examples = [line for line in comments if _starts_a_command(line)]
    if path.suffix == ".md":
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
        return [line for block in blocks for line in _logical_lines(block)]
    if path.suffix in SHELL_SUFFIXES:
        code = [line for line in lines if not line.strip().startswith("#")]
        return code + examples
    if path.name == "Dockerfile":
        return [line for line in lines if line.startswith("RUN ")] + examples
    if path.suffix in (".yaml", ".yml"):
        values = [
            line
            for document in yaml.safe_load_all(text)
            for value in _strings(document)
            for line in _logical_lines(value)
        ]
        return values + examples
    return examples


def split_arguments(rest: str) -> list[str]:
    """Shell words up to the first operator (`;`, `&&`, `|`, `>`…); shell variables become
    the placeholder `1` (for `--opt=$X`, only the value)."""
    while True:
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words: list[str] = []
        try:
            for word in lexer:
                if word and set(word) <= OPERATORS or word.startswith("#"):
                    if word[0] in "<>" and words and words[-1].isdigit():
                        words.pop()  # the descriptor of a redirection such as 2>&1
                    break
                words.append(word)
        except ValueError:  # a quote opened before the command closes inside it
            cut = max(rest.rfind(q) for q in "'\"`")
            if cut < 0:
                raise
            rest = rest[:cut]
            continue
        return [_placeholder(word) for word in words]


def _placeholder(word: str) -> str:
    if "$" not in word:
        return word
    if word.startswith("-") and "=" in word:
        return word.split("=", 1)[0] + "=1"
    return "1"


def find_commands(pattern: re.Pattern[str]) -> list[Command]:
    found = []
    for path in deploy_files():
        for line in command_lines(path):
            for match in pattern.finditer(line):
                found.append(Command(path, line, split_arguments(line[match.end() :])))
    return found


def exact_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` and its subcommand parsers with abbreviations off: `--num-worker` must not
    pass for `--num-workers`."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                exact_options(sub)
    return parser


def mmtrain_parser() -> argparse.ArgumentParser:
    parser, _ = build_parser()
    return exact_options(parser)


def parse_mmtrain(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    return parser.parse_args(args)


def parse_ray(args: list[str]) -> str:
    """Resolve and parse `ray ARGS` with Ray's click CLI without running it; the command
    name."""
    import click
    from ray.scripts.scripts import cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click's protected_args
        context = cli.make_context("ray", list(args))
        command: click.Command = cli
        rest = [*context.protected_args, *context.args]
        while isinstance(command, click.Group):
            name, sub, rest = command.resolve_command(context, rest)
            assert sub is not None, f"unknown ray command {name}"
            context = sub.make_context(name, rest, parent=context)
            command = sub
            rest = [*getattr(context, "protected_args", []), *context.args]
    return str(command.name)


# ----------------------------------------------------------------------------- files


def test_deploy_has_every_recipe() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in deploy_files()}
    for required in (
        "README.md",
        "ray/cluster.yaml",
        "k8s/rayjob.yaml",
        "k8s/rayjob-sweep.yaml",
        "slurm/mmtrain-ray.sbatch",
        "slurm/mmtrain-accelerate.sbatch",
    ):
        assert required in names
    assert any(name.startswith("accelerate/") and name.endswith(".yaml") for name in names)


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


@pytest.mark.parametrize(
    "path", sorted((DEPLOY / "accelerate").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_load_with_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))  # raises on unknown keys
    assert str(config.distributed_type) in ("DistributedType.MULTI_GPU", "MULTI_GPU")
    assert config.mixed_precision == "no"  # precision belongs to the mmtrain config
    if config.num_machines > 1:
        assert config.main_process_ip and config.main_process_port


def test_ray_cluster_config_passes_rays_schema() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((DEPLOY / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "mmtrain[" in setup
    gpu_types = [t for t in config["available_node_types"].values() if t.get("max_workers", 0) > 0]
    assert gpu_types and "gpu" in config["docker"]["image"]


@pytest.mark.parametrize(
    ("name", "command"), [("rayjob.yaml", "train"), ("rayjob-sweep.yaml", "sweep")]
)
def test_rayjob_is_kuberay_v1_with_gpu_workers(name: str, command: str) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()))
    (job,) = [d for d in documents if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["mmtrain", command]
    # `mmtrain train` runs on Ray with --ray; a sweep always does, on the job's cluster.
    assert "--ray" in entrypoint if command == "train" else "--address" in entrypoint
    if command == "sweep":
        # Trials write under --out, which every pod must see: the shared volume.
        out = entrypoint[entrypoint.index("--out") + 1]
        mounts = [
            mount["mountPath"]
            for group in [spec["rayClusterSpec"]["headGroupSpec"]]
            + spec["rayClusterSpec"]["workerGroupSpecs"]
            for mount in group["template"]["spec"]["containers"][0]["volumeMounts"]
            if mount["name"] == "runs"
        ]
        assert len(mounts) == 1 + len(spec["rayClusterSpec"]["workerGroupSpecs"])
        assert all(out.startswith(path + "/") for path in mounts), (out, mounts)
    cluster = spec["rayClusterSpec"]
    assert "headGroupSpec" in cluster
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    configs = [d for d in documents if d["kind"] == "ConfigMap"]
    assert configs
    for config_map in configs:
        for name, text in config_map["data"].items():
            assert name.endswith(".yaml")
            config_from_dict(yaml.safe_load(text))  # raises ConfigError when invalid


def test_extras_named_in_deploy_exist() -> None:
    extras = set(importlib.metadata.metadata("mmtrain").get_all("Provides-Extra") or [])
    named = {
        extra.strip()
        for path in deploy_files()
        for group in re.findall(r"mmtrain\[([\w,\s-]+)\]", path.read_text())
        for extra in group.split(",")
    }
    assert named, "no install line names mmtrain's extras"
    assert named <= extras, named - extras


# ----------------------------------------------------------------------------- commands


def test_every_mmtrain_command_parses() -> None:
    parser = mmtrain_parser()
    commands = find_commands(MMTRAIN)
    files = {c.path.relative_to(DEPLOY).as_posix() for c in commands}
    for required in (
        "README.md",
        "k8s/rayjob.yaml",
        "k8s/rayjob-sweep.yaml",
        "ray/cluster.yaml",
        "slurm/mmtrain-ray.sbatch",
        "slurm/mmtrain-accelerate.sbatch",
    ):
        assert required in files, f"no mmtrain command found in {required}"
    problems = []
    for command in commands:
        try:
            parse_mmtrain(parser, command.args)
        except Exception as error:  # CLIError, or SystemExit from --help
            problems.append(f"{command}\n    → {error}")
    assert not problems, "\n".join(problems)
    ray_runs = [c for c in commands if "--ray" in c.args]
    assert ray_runs and all(parse_mmtrain(parser, c.args).ray for c in ray_runs)


def test_every_accelerate_launch_parses() -> None:
    from accelerate.commands.launch import launch_command_parser

    parser = exact_options(launch_command_parser())
    commands = find_commands(ACCELERATE)
    assert any(c.path.name == "mmtrain-accelerate.sbatch" for c in commands)
    for command in commands:
        try:
            args = parser.parse_args(command.args)
        except SystemExit:
            pytest.fail(f"accelerate launch rejects {command}")
        assert args.module and args.training_script == "mmtrain", str(command)
        if args.config_file:
            assert (ROOT / args.config_file).is_file(), str(command)


def test_every_ray_command_parses() -> None:
    import click

    commands = find_commands(RAY)
    names = set()
    for command in commands:
        try:
            names.add(parse_ray(command.args))
        except click.ClickException as error:
            pytest.fail(f"ray rejects {command}: {error.format_message()}")
    assert {"start", "submit", "up"} <= names


def test_named_files_exist() -> None:
    """Paths under deploy/ named in the recipes exist; so do configs/ paths once the
    configs/ folder holds any config."""
    has_configs = any((ROOT / "configs").glob("*.yaml"))
    missing = []
    for path in deploy_files():
        for name in re.findall(
            r"(?<![\w/])((?:deploy|configs)/[\w./-]+\.(?:yaml|sbatch))", path.read_text()
        ):
            if name.startswith("configs/") and not has_configs:
                continue
            if not (ROOT / name).is_file():
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert not missing, "\n".join(missing)


# ----------------------------------------------------------------------------- shell


def test_the_checks_catch_mistakes() -> None:
    """The parsers used above reject misspelt commands and options (no abbreviations)."""
    import click

    parser = mmtrain_parser()
    for args in (["train", "c.yaml", "--num-worker", "2"], ["trian", "c.yaml"]):
        with pytest.raises(Exception, match="unrecognized|invalid choice"):
            parse_mmtrain(parser, args)
    with pytest.raises(click.NoSuchOption):
        parse_ray(["start", "--head", "--num-gpu", "2"])
    assert split_arguments('train "$CONFIG" --quiet\'') == ["train", "1", "--quiet"]
    assert split_arguments("train a.yaml 2>&1 | tee log") == ["train", "a.yaml"]
    assert split_arguments("train a.yaml --set=x=$Y && echo") == ["train", "a.yaml", "--set=1"]


@pytest.mark.parametrize("path", shell_scripts(), ids=lambda p: p.name)
def test_shell_scripts_pass_bash_n(path: Path) -> None:
    assert path.read_text().startswith("#!/bin/bash\n")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", shell_scripts(), ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
