"""The architecture contract (docs/architecture.md): one import package, layers that import one way.

Every import in the product is read from source (so a lazy import inside a function counts
too) and checked against the allowed layer edges; a folder-level cycle, a bare top-level
``ingest``/``storage``/``queries`` import, a module over the size limit, or a folder missing
from the package map fails here before it reaches a user. A wheel built from this checkout
must hold exactly one top-level import package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folder -> the import package it installs as.
LAYERS = {
    "core": "klinestore.core",
    "storage": "klinestore.storage",
    "ingest": "klinestore.ingest",
    "queries": "klinestore.queries",
    "jobs": "klinestore.jobs",
    "sim": "klinestore.sim",
    "gateway": "klinestore.gateway",
    "klinestore": "klinestore",
}

#: What each layer may import (besides itself and third-party code). ``ingest.protocol`` is the
#: pure (sans-I/O) part of ingest: the simulator may use it, and it imports only the bottom layer.
ALLOWED = {
    "core": set(),
    "storage": {"core"},
    "ingest.protocol": {"core"},
    "ingest": {"core", "storage", "ingest.protocol"},
    "queries": {"core", "storage"},
    "jobs": {"core", "storage", "ingest", "ingest.protocol"},
    "sim": {"core", "ingest.protocol"},
    "gateway": {"core", "storage", "ingest", "ingest.protocol", "queries"},
    "klinestore": {"core", "storage", "ingest", "ingest.protocol", "queries", "jobs", "sim", "gateway"},
}

#: House limit on a product module (STYLE.md: about 400 lines, 450 hard).
MAX_LINES = 450


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _layer_of(name: str) -> str | None:
    """The layer (``ingest.protocol`` distinguished) a dotted ``klinestore...`` name belongs to."""
    parts = name.split(".")
    if parts[0] != "klinestore":
        return None
    if len(parts) == 1 or parts[1] not in LAYERS or parts[1] == "klinestore":
        return "klinestore"
    if parts[1] == "ingest" and len(parts) > 2 and parts[2] == "protocol":
        return "ingest.protocol"
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every absolute import in ``path`` as ``(line, dotted name)``, names imported from a package included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    """Layer-to-layer imports in the product, each with the places that make it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for folder in LAYERS:
        for path in _modules(folder):
            for line, name in _imports(path):
                target = _layer_of(name)
                if target is None:
                    continue
                # "from klinestore.ingest import protocol" names the protocol package.
                if target == "ingest" and name.split(".")[2:3] == ["protocol"]:
                    target = "ingest.protocol"
                source = "ingest.protocol" if path.is_relative_to(ROOT / "ingest" / "protocol") else folder
                if target != source:
                    edges.setdefault((source, target), []).append(f"{path.relative_to(ROOT)}:{line} {name}")
    return edges


def _allowed(source: str, target: str) -> bool:
    return target in ALLOWED[source]


def test_layers_import_one_way() -> None:
    broken = [
        f"{source} -> {target}: {where}"
        for (source, target), places in sorted(_edges().items())
        if not _allowed(source, target)
        for where in places
    ]
    assert not broken, "imports that break docs/architecture.md:\n" + "\n".join(broken)


def test_no_folder_level_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in _edges():
        graph.setdefault(source.split(".")[0], set()).add(target.split(".")[0])
    for node in graph:
        graph[node].discard(node)

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph.get(start, ()))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return seen

    cycles = sorted(node for node in graph if node in reach(node))
    assert not cycles, f"folders in an import cycle: {cycles}"


def test_nothing_imports_the_bare_folder_names() -> None:
    """``import storage`` would load a second copy of a module (or another distribution's ``storage``)."""
    bare = {"core", "storage", "ingest", "queries", "jobs", "sim", "gateway"}
    offenders = [
        f"{p.relative_to(ROOT)}:{line} {name}"
        for folder in [*LAYERS, "tests", "bench"]
        for p in _modules(folder)
        for line, name in _imports(p)
        if name.split(".")[0] in bare or name.startswith(".")
    ]
    assert not offenders, offenders


def test_product_modules_stay_small() -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for folder in LAYERS
        for p in _modules(folder)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not big, big


def test_every_package_folder_is_installed() -> None:
    """pyproject's explicit package list and map cover every folder holding an ``__init__.py``."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = conf["package-dir"]
    assert mapping == {pkg: folder for folder, pkg in LAYERS.items()}
    found = set()
    for folder, pkg in LAYERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([pkg, *rel.parts]))
    assert set(conf["packages"]) == found


def test_wheel_holds_one_import_package(tmp_path: Path) -> None:
    """Built from this checkout, the wheel installs ``klinestore`` and nothing else at the top level."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )
    if built.returncode != 0 and "No matching distribution found for setuptools" in built.stderr:
        pytest.skip("no package index reachable to build the wheel")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("klinestore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"klinestore"}
    for pkg in ("core", "storage", "ingest", "ingest/protocol", "queries", "jobs", "sim", "gateway", "commands"):
        assert f"klinestore/{pkg}/__init__.py" in names
    assert "klinestore/ingest/protocol/streams.py" in names


def test_config_and_the_command_line_load_no_heavy_library() -> None:
    """Every command loads the config first: the packages' surfaces load on first use
    (``core.lazy``), so reading the config costs no Polars, DuckDB, pandas or matplotlib."""
    heavy = ("polars", "duckdb", "pandas", "matplotlib", "pyarrow", "websockets")
    code = ("import sys, klinestore.cli, klinestore.config, klinestore.storage.config, klinestore.queries.config; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == ""


def test_package_surfaces_resolve_every_name() -> None:
    """Each lazily exported name imports, and an unknown one is an AttributeError naming it."""
    import importlib

    for pkg in ("storage", "ingest", "queries", "gateway", "sim"):
        module = importlib.import_module(f"klinestore.{pkg}")
        for name in module.__all__:
            assert getattr(module, name) is not None, (pkg, name)
        with pytest.raises(AttributeError, match="no_such_name"):
            module.no_such_name  # noqa: B018


def test_a_submodule_named_like_an_export_does_not_replace_it() -> None:
    """``klinestore.queries.export`` is the function, also after its module was imported."""
    import klinestore.queries.export
    import klinestore.storage.resample  # noqa: F401
    from klinestore.queries import export, gaps, sql
    from klinestore.storage import resample

    assert all(callable(f) for f in (export, gaps, sql, resample))
    assert klinestore.queries.export is export
