"""The installed distribution: one import name, ``ceimap``, whose subpackages are the repository's folders."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ceimap.segment.compat import tomllib

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"ceimap": "ceimap", "ceimap.segment": "segment", "ceimap.stats": "stats",
           "ceimap.napari_plugin": "napari_plugin"}
OLD_NAMES = ("segment", "stats", "napari_plugin")


def _pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_pyproject_maps_the_folders_and_lists_every_package():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == FOLDERS
    found = []
    for package, folder in FOLDERS.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            found.append(".".join([package, *init.parent.relative_to(REPO / folder).parts]))
    assert sorted(setuptools["packages"]) == sorted(found)


def test_entry_points_name_the_ceimap_package():
    project = _pyproject()["project"]
    assert project["scripts"] == {"ceimap": "ceimap.stats.cli:main"}
    assert project["entry-points"]["napari.manifest"] == {"ceimap": "ceimap.napari_plugin:napari.yaml"}
    installed = importlib.metadata.entry_points(group="console_scripts", name="ceimap")
    assert [e.value for e in installed] == ["ceimap.stats.cli:main"]
    manifest = (REPO / "napari_plugin" / "napari.yaml").read_text()
    names = [line.split("python_name:")[1].strip() for line in manifest.splitlines() if "python_name:" in line]
    assert names and all(n.startswith("ceimap.napari_plugin.") for n in names)


def test_every_module_imports_under_ceimap_only(tmp_path):
    """Every module of ceimap loads, and none of them under a second name (``segment.x`` beside
    ``ceimap.segment.x``): run outside the repository, where an old name would not import at all."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import ceimap\n"
        "names = ['ceimap'] + ['ceimap.' + m.name for m in pkgutil.iter_modules(ceimap.__path__) if not m.ispkg]\n"
        "for package in ('ceimap.segment', 'ceimap.stats', 'ceimap.napari_plugin'):\n"
        "    module = importlib.import_module(package)\n"
        "    names.append(package)\n"
        "    names += [i.name for i in pkgutil.walk_packages(module.__path__, package + '.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "print(json.dumps({'n': len(names), 'loaded': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n"] > 60
    doubles = [m for m in out["loaded"] if m.split(".")[0] in OLD_NAMES]
    assert doubles == []


@pytest.mark.slow
def test_a_built_wheel_holds_only_ceimap(tmp_path):
    """``pip install .`` (not editable): the wheel holds ``ceimap/`` and its metadata only; installed, from
    another folder, ``import ceimap`` works and ``segment`` / ``stats`` / ``napari_plugin`` are not importable."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in FOLDERS.values():
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(source)],
                   check=True)
    [wheel] = list(wheels.glob("ceimap-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names}
        [top_level] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top_level).decode().split() == ["ceimap"]
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ceimap"}
    assert "ceimap/napari_plugin/napari.yaml" in names and "ceimap/segment/io/manifest.py" in names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    assert {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} - {"bin"} == {"ceimap"}
    code = ("import importlib.util, sys\n"
            "import ceimap.stats.cli, ceimap.napari_plugin\n"
            "assert ceimap.__file__.startswith(sys.argv[1]), ceimap.__file__\n"
            "print([importlib.util.find_spec(n) is None for n in ('segment', 'stats', 'napari_plugin')])\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=elsewhere, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(target)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True, True, True]"
