"""The outside plugin in examples/plugin-example: installed with pip, it appears in
`mmtrain plugins list`, passes the conformance kit (its own tests), trains in a simulated
experiment next to the built-ins, and a record of it names the package when it is missing.

pip installs it with `--target` into a temporary folder that only the subprocesses see
(through PYTHONPATH): the shared virtualenv and this test process stay as they were, so other
tests never see the extra plugins.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmtrain.cli import main
from mmtrain.errors import PluginError
from mmtrain.registry import check_provenance

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin-example"


def run(args: list[str], env: dict[str, str], cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if importlib.util.find_spec("pip") is None:
        pytest.skip(f"pip is not installed for {sys.executable}; cannot install the example")
    root = tmp_path_factory.mktemp("plugin-example")
    source, target = root / "source", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = run(
        ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
        + ["--target", str(target), str(source)],
        env,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install failed:\n{proc.stdout}\n{proc.stderr}")
    with_plugin = {**env, "PYTHONPATH": os.pathsep.join([str(target), env.get("PYTHONPATH", "")])}
    return {"root": root, "source": source, "env": env, "with_plugin": with_plugin}


SEPARATOR = "=" * 20

#: the CLI in one subprocess (each start imports torch): listings, info, a short experiment
CLI_SCRIPT = f"""
import sys
from mmtrain.cli import main
for argv in (
    ["plugins", "list", "--json"],
    ["plugins", "list", "gated*"],
    ["plugins", "info", "signal"],
    ["experiment", "ivae-bimodal", "--aggregator", "gated_attention", "--steps", "5",
     "--is-samples", "4", "--num-examples", "500", "--quiet", "--json", sys.argv[1]],
):
    assert main(argv) == 0, argv
    print("{SEPARATOR}")
"""


@pytest.fixture(scope="module")
def cli(installed: dict) -> dict[str, object]:
    result = Path(installed["root"]) / "result.json"
    proc = run(["-c", CLI_SCRIPT, str(result)], installed["with_plugin"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    listing, table, info, _, _ = proc.stdout.split(SEPARATOR + "\n")
    return {
        "listing": json.loads(listing),
        "table": table,
        "info": info,
        "result": json.loads(result.read_text()),
    }


def test_plugins_list_before_and_after_install(
    cli: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plugins", "list", "--json"]) == 0  # this process: without the plugin
    before = json.loads(capsys.readouterr().out)
    after = cli["listing"]
    builtins_before = {
        (p["kind"], p["name"]) for p in before["plugins"] if p["package"] == "mmtrain"
    }
    assert builtins_before <= {(p["kind"], p["name"]) for p in after["plugins"]}
    added = {
        (p["kind"], p["name"], p["package"], p["version"])
        for p in after["plugins"]
        if p["package"] != "mmtrain"
    }
    assert added == {
        ("modality", "signal", "mmtrain-signal", "0.1.0"),
        ("aggregator", "gated_attention", "mmtrain-signal", "0.1.0"),
        ("aggregator", "gated_attention_mixture", "mmtrain-signal", "0.1.0"),
    }
    assert after["failed"] == []
    table, info = cli["table"], cli["info"]
    assert "gated_attention" in table and "mmtrain-signal" in table and "sum_pooling" not in table
    assert "signal (modality) from mmtrain-signal 0.1.0" in info
    assert "kernel_size" in info and "odd kernel size" in info


def test_experiment_with_the_plugin_aggregator_records_it(cli: dict) -> None:
    result = cli["result"]
    assert result["steps"] == 5 and result["settings"]["aggregator"] == "gated_attention"
    record = result["plugins"]
    assert record["aggregator"] == {
        "gated_attention": {"package": "mmtrain-signal", "version": "0.1.0"}
    }
    assert record["modality"]["vector"]["package"] == "mmtrain"
    # This process does not have the plugin: the record says which package to install.
    with pytest.raises(PluginError, match=r"pip install mmtrain-signal==0\.1\.0"):
        check_provenance(record)


def test_example_passes_the_kit_and_trains(installed: dict) -> None:
    source = installed["source"]
    proc = run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
        installed["with_plugin"],
        cwd=source,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "7 passed" in proc.stdout
