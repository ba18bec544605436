"""Imports go one way (README, "Architecture"): io → inference → report → widgets/cli, with models below
inference and training beside it. A function-level import counts as much as a module-level one: both
make the lower layer depend on the higher."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import napari_chsnet

PACKAGE = Path(napari_chsnet.__file__).parent
# A string that is a whole module path of the package: what importlib.import_module or __import__ take.
MODULE_PATH = re.compile(r"napari_chsnet(\.[A-Za-z_][A-Za-z0-9_]*)+")
# Modules at the package's top level that only hold shared basics (errors, names, small helpers).
BASE = {"errors", "listing", "registry", "slabs", "resources_path", "json_numbers", "interrupts", "resources"}
# What each layer may import besides itself and BASE.
ALLOWED = {
    "io": set(),
    "models": {"io"},
    "inference": {"io", "models"},
    "training": {"io", "models", "inference"},
    "report": {"io", "models", "inference"},
    "cli": {"io", "models", "inference", "training", "report"},
    "widgets": {"io", "models", "inference", "training", "report", "napari_hooks"},
    "napari_hooks": {"io", "widgets"},  # napari's reader, writer and sample contributions
}


def _layer(module: str) -> str:
    """``napari_chsnet.inference.pipeline`` → ``inference``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts)


def _imports(path: Path) -> set[str]:
    """The package's modules ``path`` imports, relative imports (``from ..errors``) made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join([*base, node.module] if node.module else base))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_PATH.fullmatch(node.value)
        ):
            names.add(node.value)  # importlib.import_module("napari_chsnet...") and the like
    return {name for name in names if name.split(".")[0] == "napari_chsnet"}


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(_module_name(path))
        if layer in BASE or layer == "__init__":
            continue
        for name in _imports(path):
            target = _layer(name)
            if target in BASE or target == layer:
                continue
            if target not in ALLOWED.get(layer, set()):
                wrong.append(f"{_module_name(path)} imports {name}")
    assert wrong == []


def test_the_base_modules_import_only_base_modules():
    base_files = [PACKAGE / f"{name}.py" for name in BASE if (PACKAGE / f"{name}.py").is_file()]
    base_files.append(PACKAGE / "__init__.py")  # importing the package loads nothing else
    assert len(base_files) >= 7
    layered = {
        path.stem: {name for name in _imports(path) if _layer(name) not in BASE} for path in base_files
    }
    assert layered == {path.stem: set() for path in base_files}
