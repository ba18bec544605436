"""The installed plugin finds its manifest and resources, in a wheel as in the checkout."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "napari_chsnet"


def _manifest() -> dict:
    return yaml.safe_load((PACKAGE / "napari.yaml").read_text())


def test_every_manifest_command_imports_as_napari_would():
    for command in _manifest()["contributions"]["commands"]:
        module_name, attribute = command["python_name"].split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, attribute)), command["python_name"]


def test_npe2_validates_the_manifest_with_imports():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent)) or shutil.which("npe2")
    if npe2 is None:
        pytest.skip("the npe2 command is not installed")
    result = subprocess.run([npe2, "validate", "napari-chsnet", "--imports"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_top_level_manifest_is_the_packaged_one():
    assert (REPO / "napari.yaml").resolve() == (PACKAGE / "napari.yaml").resolve()


@pytest.mark.slow
def test_wheel_contains_manifest_resources_and_every_subpackage(tmp_path):
    pytest.importorskip("build")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # setuptools warns (on every install) about a resources folder it would ship only by accident.
    assert "absent from the `packages` configuration" not in result.stdout + result.stderr
    wheel = next(tmp_path.glob("napari_chsnet-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "napari_chsnet/napari.yaml" in names
    assert "napari_chsnet/resources/__init__.py" in names
    subpackages = {p.parent.relative_to(REPO / "src").as_posix() for p in PACKAGE.rglob("__init__.py")}
    for subpackage in subpackages:
        assert f"{subpackage}/__init__.py" in names, (
            f"{subpackage} missing from the wheel (add it to pyproject)"
        )
    for shipped in (REPO / "resources").rglob("*"):
        if shipped.is_file() and shipped.suffix in {".safetensors", ".json", ".md"}:
            relative = shipped.relative_to(REPO / "resources").as_posix()
            assert f"napari_chsnet/resources/{relative}" in names, relative
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "napari.manifest" in text and "napari_chsnet:napari.yaml" in text
    assert "chsnet = napari_chsnet.cli:run" in text


def test_the_bundled_weights_stay_under_100_mb_together():
    """The install ships every model's weights (issue 7: at most 100 MB for all of them)."""
    files = list((REPO / "resources" / "weights").glob("*.safetensors"))
    assert {f.stem for f in files} == {"chsnet", "eamc", "rdunet"}
    assert sum(f.stat().st_size for f in files) <= 100 * 1000**2
