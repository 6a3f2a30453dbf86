"""The registry: decorator registration, lookups with suggestions, duplicates, wildcard
listing, entry-point discovery (module and function targets, broken packages), provenance
records for checkpoints, and `mmtrain plugins list/info`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import mmtrain
from mmtrain import registry
from mmtrain.cli import main
from mmtrain.errors import PluginError
from mmtrain.registry import (
    AGGREGATORS,
    MODALITIES,
    OBJECTIVES,
    PluginLoadWarning,
    PluginVersionWarning,
    Registry,
    check_provenance,
    describe_options,
    discover_plugins,
    failed_plugins,
    list_plugins,
    plugins_of,
    provenance,
)
from tests.helpers import build_small_model

# ---------------------------------------------------------------------------------------------
# the Registry object


def test_register_as_decorator_and_call() -> None:
    widgets = Registry("widget")

    @widgets.register("round")
    def round_widget() -> str:
        """Makes round widgets.

        Second paragraph."""
        return "round"

    widgets.register("square", str.upper)
    assert widgets.get("round") is round_widget
    assert widgets.entry("round").doc == "Makes round widgets."
    assert widgets.names() == ["round", "square"]
    assert "round" in widgets and "oval" not in widgets
    assert len(widgets) == 2 and list(widgets) == ["round", "square"]
    assert widgets.name_of(str.upper) == "square"


def test_duplicate_needs_override() -> None:
    widgets = Registry("widget")
    widgets.register("a", len)
    widgets.register("a", len)  # the same object again is a no-op
    with pytest.raises(PluginError, match="widget 'a' is already registered by .*override=True"):
        widgets.register("a", max)
    widgets.register("a", max, override=True)
    assert widgets.get("a") is max


def test_unknown_name_lists_known_and_closest() -> None:
    with pytest.raises(
        PluginError, match=r"unknown modality 'imag'; did you mean 'image'\? Known:"
    ):
        MODALITIES.get("imag")
    with pytest.raises(PluginError, match="unknown modality 'audio' Known: ") as caught:
        MODALITIES.get("audio")
    assert {"image", "label", "text", "vector"} <= set(str(caught.value).split(": ")[1].split(", "))


def test_wildcard_listing() -> None:
    assert AGGREGATORS.list("sum*") == ["sum_pooling", "sum_pooling_mixture"]
    assert AGGREGATORS.list("*_mixture") == ["self_attention_mixture", "sum_pooling_mixture"]
    mixture = {(e.kind, e.name) for e in list_plugins("mixture")}
    assert mixture == {("objective", "mixture"), ("prior", "mixture")}
    assert [e.name for e in list_plugins("*", kind="modality")] == MODALITIES.names()


def test_builtins_report_mmtrain_and_its_version() -> None:
    builtins = [e for e in list_plugins() if e.module.startswith("mmtrain.")]
    assert len(builtins) >= 20
    for entry in builtins:
        assert (entry.package, entry.version) == ("mmtrain", mmtrain.__version__), entry


def test_describe_options() -> None:
    image = {o.name: o for o in describe_options(MODALITIES.get("image"))}
    assert image["height"].default == 28 and "height" in image["height"].doc
    assert image["likelihood"].choices == ("bernoulli", "laplace", "normal")
    pooling = {o.name: o for o in describe_options(AGGREGATORS.get("sum_pooling"))}
    assert pooling["feature_dim"].required and pooling["pooling_size"].default == 256

    class Documented:
        """Something.

        Args:
            size: how big it is,
                in pixels.
            name (str): what it is called.
        """

        def __init__(self, size: int = 3, name: str = "x") -> None:
            pass

    docs = {o.name: o.doc for o in describe_options(Documented)}
    assert docs == {"size": "how big it is, in pixels.", "name": "what it is called."}


# ---------------------------------------------------------------------------------------------
# entry-point discovery with fake installed distributions

FAKE_PACKAGES = {
    "fake-plugin-ok": (
        "0.3",
        "ok = fake_plugin_ok",
        {
            "fake_plugin_ok/__init__.py": """
                from mmtrain.registry import AGGREGATORS
                from mmtrain.plugins.aggregators.sum_pooling import SumPooling

                @AGGREGATORS.register("fake_pool")
                class FakePool(SumPooling):
                    '''Sum pooling under another name.'''
            """
        },
    ),
    "fake-plugin-callable": (
        "1.0",
        "objectives = fake_plugin_callable.hooks:register",
        {
            "fake_plugin_callable/__init__.py": "",
            "fake_plugin_callable/hooks.py": """
                from mmtrain.registry import OBJECTIVES

                def register():
                    OBJECTIVES.register("fake_objective", lambda model, batch: None)
            """,
        },
    ),
    "fake-plugin-broken": (
        "2.0",
        "broken = fake_plugin_broken",
        {
            "fake_plugin_broken/__init__.py": """
                from mmtrain.registry import MODALITIES
                MODALITIES.register("half_loaded", object)
                import numpyy
            """
        },
    ),
    "fake-plugin-dup": (
        "0.1",
        "dup = fake_plugin_dup",
        {
            "fake_plugin_dup/__init__.py": """
                from mmtrain.registry import AGGREGATORS
                AGGREGATORS.register("poe", object)
            """
        },
    ),
    "fake-plugin-class": (
        "0.1",
        "cls = fake_plugin_class:Thing",
        {"fake_plugin_class/__init__.py": "class Thing:\n    pass\n"},
    ),
}


def write_fake_packages(root: Path, names: list[str]) -> None:
    for name in names:
        version, entry_point, files = FAKE_PACKAGES[name]
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[mmtrain.plugins]\n{entry_point}\n")
        for path, source in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(source))


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    write_fake_packages(site, list(FAKE_PACKAGES))
    monkeypatch.syspath_prepend(str(site))
    with registry.isolated():
        yield site
    for module in list(sys.modules):
        if module.startswith("fake_plugin"):
            del sys.modules[module]


def test_discovery_loads_working_plugins_and_reports_broken_ones(fake_site: Path) -> None:
    with pytest.warns(PluginLoadWarning) as caught:
        new = discover_plugins(force=True)
    assert len(caught) == 3
    messages = [str(w.message) for w in caught]
    assert "mmtrain plugin package fake-plugin-broken failed to load: Module" in " ".join(messages)
    failed = {f.package: f for f in new}
    assert set(failed) == {"fake-plugin-broken", "fake-plugin-dup", "fake-plugin-class"}
    assert "ModuleNotFoundError: No module named 'numpyy'" in failed["fake-plugin-broken"].error
    assert "aggregator 'poe' is already registered by mmtrain" in failed["fake-plugin-dup"].error
    assert "must name a module or a function" in failed["fake-plugin-class"].error
    assert failed["fake-plugin-broken"].version == "2.0"

    entry = AGGREGATORS.entry("fake_pool")
    assert (entry.package, entry.version, entry.doc) == (
        "fake-plugin-ok",
        "0.3",
        "Sum pooling under another name.",
    )
    assert OBJECTIVES.entry("fake_objective").package == "fake-plugin-callable"
    assert "half_loaded" not in MODALITIES  # a failed package is rolled back
    assert AGGREGATORS.entry("poe").package == "mmtrain"  # and cannot replace a built-in
    assert AGGREGATORS.get("sum_pooling") is not None  # the others keep working
    with pytest.raises(PluginError, match=r"failed to load: .*fake-plugin-broken \(Module.*numpyy"):
        MODALITIES.get("half_loaded")
    assert discover_plugins(force=True) == []  # loaded entry points are not loaded again
    assert len(failed_plugins()) == 3


def test_isolated_registry_restores_state(fake_site: Path) -> None:
    with registry.isolated(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        discover_plugins(force=True)
        assert "fake_pool" in AGGREGATORS
    assert "fake_pool" not in AGGREGATORS
    assert failed_plugins() == []


def test_plugins_list_shows_packages_and_failures(
    fake_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        discover_plugins(force=True)
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    assert "fake_pool" in out and "fake-plugin-ok" in out and "0.3" in out
    assert "failed to load" in out and "numpyy" in out
    assert main(["plugins", "list", "fake*", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed["plugins"]] == ["fake_pool", "fake_objective"]
    assert {f["package"] for f in listed["failed"]} >= {"fake-plugin-broken"}


def test_discovery_is_lazy(tmp_path: Path) -> None:
    write_fake_packages(tmp_path, ["fake-plugin-ok"])
    script = textwrap.dedent(
        """
        import sys
        import mmtrain.registry as registry
        assert "fake_plugin_ok" not in sys.modules and "mmtrain.plugins" not in sys.modules
        entry = registry.AGGREGATORS.entry("fake_pool")
        assert "fake_plugin_ok" in sys.modules
        print(entry.package, entry.version)
        """
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "fake-plugin-ok 0.3"


# ---------------------------------------------------------------------------------------------
# provenance


def test_provenance_record_round_trips_through_json() -> None:
    record = provenance({"modality": ["image", "vector"], "aggregator": ["sum_pooling"]})
    version = mmtrain.__version__
    assert record == {
        "modality": {
            "image": {"package": "mmtrain", "version": version},
            "vector": {"package": "mmtrain", "version": version},
        },
        "aggregator": {"sum_pooling": {"package": "mmtrain", "version": version}},
    }
    assert check_provenance(json.loads(json.dumps(record))) == []


def test_plugins_of_a_model() -> None:
    model = build_small_model("self_attention", num_components=1)
    assert plugins_of(model) == {
        "modality": ["vector"],
        "aggregator": ["self_attention"],
        "prior": ["fixed"],
    }
    assert provenance(plugins_of(model))["prior"]["fixed"]["package"] == "mmtrain"


def test_missing_plugin_names_the_package_to_install() -> None:
    record = {
        "modality": {
            "image": {"package": "mmtrain", "version": mmtrain.__version__},
            "signal": {"package": "mmtrain-signal", "version": "0.1.0"},
        },
        "aggregator": {"gated_attention": {"package": "mmtrain-signal", "version": "0.1.0"}},
    }
    with pytest.raises(PluginError) as caught:
        check_provenance(record)
    message = str(caught.value)
    assert "modality 'signal' (from mmtrain-signal 0.1.0) is not installed" in message
    assert "pip install mmtrain-signal==0.1.0" in message
    assert "aggregator 'gated_attention'" in message
    assert "image" not in message


def test_version_or_package_mismatch_warns() -> None:
    record = {
        "modality": {"image": {"package": "mmtrain", "version": "0.0.1"}},
        "aggregator": {"poe": {"package": "other-package", "version": "1.0"}},
    }
    with pytest.warns(PluginVersionWarning) as caught:
        notes = check_provenance(record)
    assert len(notes) == 2 and len(caught) == 2
    assert "recorded with mmtrain 0.0.1, installed is" in notes[0]
    assert "recorded from other-package but is provided by mmtrain" in notes[1]


def test_missing_plugin_from_a_broken_package_gives_its_error(fake_site: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        discover_plugins(force=True)
    record = {"modality": {"half_loaded": {"package": "fake-plugin-broken", "version": "2.0"}}}
    with pytest.raises(PluginError, match="installed but failed to load: .*numpyy"):
        check_provenance(record)


def test_unknown_kind_in_a_record() -> None:
    with pytest.raises(PluginError, match="unknown plugin kind 'modalities'; did you mean"):
        check_provenance({"modalities": {}})


# ---------------------------------------------------------------------------------------------
# the CLI


def test_plugins_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    for word in ("name", "kind", "package", "version", "image", "sum_pooling", "mmtrain"):
        assert word in out
    assert "failed to load" not in out


def test_plugins_info_shows_options_with_defaults_and_docs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins", "info", "text"]) == 0
    out = capsys.readouterr().out
    assert "text (modality) from mmtrain" in out
    assert "unknown" in out and '"error"' in out and "one of: error, map" in out
    assert main(["plugins", "info", "label", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    options = {o["name"]: o for o in info["options"]}
    assert options["hidden"]["default"] == [64]
    assert options["num_classes"]["doc"].startswith("number of classes")


def test_plugins_info_ambiguous_name_shows_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "info", "mixture"]) == 0
    out = capsys.readouterr().out
    assert "mixture (objective)" in out and "mixture (prior)" in out
    assert main(["plugins", "info", "mixture", "--kind", "prior"]) == 0
    assert "(objective)" not in capsys.readouterr().out


def test_plugins_info_unknown_name_is_a_short_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "info", "imgae"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'image'" in err and "Traceback" not in err
