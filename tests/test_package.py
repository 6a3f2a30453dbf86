"""The wheel carries the plugin and kernel packages under mmtrain/ (the package layout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_plugins_and_kernels(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("mmtrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "mmtrain/__init__.py",
        "mmtrain/plugins/__init__.py",
        "mmtrain/plugins/aggregators/sum_pooling.py",
        "mmtrain/plugins/modalities/vector.py",
        "mmtrain/kernels/__init__.py",
        "mmtrain/kernels/reference.py",
        "mmtrain/py.typed",
    ):
        assert required in names, required
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), sorted(names)
    assert not any(name.startswith(("plugins/", "kernels/", "tests/")) for name in names)
    for folder, prefix in (
        ("mmtrain", "mmtrain"),
        ("plugins", "mmtrain/plugins"),
        ("kernels", "mmtrain/kernels"),
    ):
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.relative_to(ROOT / folder).as_posix()
            assert f"{prefix}/{relative}" in names, f"subpackage missing from the wheel: {init}"


def test_installed_import_tree_matches_layout() -> None:
    import mmtrain
    import mmtrain.kernels
    import mmtrain.plugins.aggregators.sum_pooling

    package = Path(mmtrain.__file__).parent
    if package == ROOT / "mmtrain":  # editable install: the source folders
        assert Path(mmtrain.plugins.__file__).parent == ROOT / "plugins"
        assert Path(mmtrain.kernels.__file__).parent == ROOT / "kernels"
    else:  # regular install: everything under site-packages/mmtrain
        assert Path(mmtrain.plugins.__file__).parent == package / "plugins"
        assert Path(mmtrain.kernels.__file__).parent == package / "kernels"
