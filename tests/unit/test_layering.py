"""The layering stays true (ADR-045): every first-party import points down the declared layers, and no two
packages import each other.

Every module of ``backend``, ``execution`` and ``scripts`` is parsed with :mod:`ast`; every ``import`` and
``from ... import`` counts, at module level or inside a function (relative imports are resolved). Imports
built from strings at run time (``importlib``) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("backend", "execution", "scripts")

# Lowest layer first. A module may import its own package and any package of a strictly lower layer: never a
# package of its own layer (a peer) or of a higher one. A new package must be placed here (and in ADR-045).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("backend.errors", "backend.home", "backend.sqlite", "backend.clock")),
    ("config", ("backend.config",)),
    # Kraken through ccxt, then the OS credential store that keeps its key (backend.secrets uses kraken's Credentials).
    ("exchange client", ("backend.kraken",)),
    ("credential store", ("backend.secrets",)),
    ("inputs and records", ("backend.data", "backend.features", "backend.strategy", "backend.audit")),
    ("execution and stores", ("execution", "backend.profiles", "backend.sandbox")),
    ("kernel and models", ("backend.engine", "backend.models", "backend.control")),
    ("bundles", ("backend.bundles",)),
    ("runs", ("backend.runs",)),
    ("runtime", ("backend.runtime",)),
    ("operator", ("backend.operator",)),
    ("console", ("backend.console",)),
    ("shell", ("scripts",)),
)
# The packages the issue names as lying below the runs layer.
BELOW_RUNS = ("backend.engine", "backend.models", "backend.features", "backend.data", "backend.strategy", "execution")


@dataclass(frozen=True)
class Import:
    """One first-party import: ``module`` (a dotted name) imports ``target`` at ``line``."""

    module: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} imports {self.target} (line {self.line})"


def module_name(root: Path, path: Path) -> str:
    """Return the dotted module name of ``path`` under ``root`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Yield the first-party imports of the module at ``path``, wherever they stand in it."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
            # ``from . import x`` may name a module: count it as the submodule it is.
            targets = [prefix] if node.module else [f"{prefix}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [str(node.module)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in TOP_PACKAGES:
                yield Import(module, target, node.lineno)


def first_party_imports(root: Path) -> list[Import]:
    """Return every first-party import of every module under ``root``'s top packages, sorted."""
    found = [imp for top in TOP_PACKAGES for path in sorted((root / top).rglob("*.py")) for imp in imports_of(root, path)]
    return sorted(found, key=lambda imp: (imp.module, imp.line, imp.target))


def unit_of(name: str) -> str:
    """Return the layered package a module belongs to: ``backend.<x>``, or the top package."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "backend" and len(parts) > 1 else parts[0]


def layer_index() -> dict[str, int]:
    return {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def layering_violations(found: list[Import]) -> list[str]:
    """Return one message per import that points sideways or up the layers, or into an undeclared package."""
    rank = layer_index()
    problems = []
    for imp in found:
        source, target = unit_of(imp.module), unit_of(imp.target)
        if source == target:
            continue
        missing = [unit for unit in (source, target) if unit not in rank]
        if missing:
            problems.append(f"{imp}: {', '.join(missing)} is in no layer; place it in LAYERS (tests/unit/test_layering.py)")
            continue
        if rank[target] >= rank[source]:
            where = "its peer" if rank[target] == rank[source] else "the higher"
            problems.append(
                f"{imp}: {source} (layer {rank[source]}, {LAYERS[rank[source]][0]}) may not import "
                f"{where} {target} (layer {rank[target]}, {LAYERS[rank[target]][0]})"
            )
    return problems


def package_of(module: str, packages: set[str]) -> str:
    """Return the innermost package holding ``module`` (the module itself when it is a package)."""
    while module not in packages and "." in module:
        module = module.rpartition(".")[0]
    return module


def package_cycles(root: Path, found: list[Import]) -> list[str]:
    """Return one message per cycle between packages (a package and its own subpackages do not count).

    Packages are every directory with an ``__init__.py`` (``execution.orders``, ``backend.data.providers``)
    plus the foundation modules, so a cycle between two subpackages is caught as well as one between layers.
    """
    packages = {module_name(root, p.parent / "__init__.py") for top in TOP_PACKAGES for p in (root / top).rglob("__init__.py")}
    packages |= {unit for _, units in LAYERS for unit in units}
    edges: dict[str, dict[str, Import]] = {}
    for imp in found:
        a, b = package_of(imp.module, packages), package_of(imp.target, packages)
        if a == b or a.startswith(b + ".") or b.startswith(a + "."):
            continue
        edges.setdefault(a, {}).setdefault(b, imp)
    cycles: list[str] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(edges):
        # Depth-first from ``start``; a path back to ``start`` is a cycle, reported once per set of packages.
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        visited: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, {}), reverse=True):
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        hops = [f"{a} -> {b} ({edges[a][b]})" for a, b in zip(path, path[1:] + [start], strict=True)]
                        cycles.append("circular dependency: " + "; ".join(hops))
                elif nxt not in visited:
                    visited.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return cycles


# ---------------------------------------------------------------------------------------------- the project


def test_every_import_points_down_the_layers() -> None:
    found = first_party_imports(ROOT)
    pairs = {(imp.module, imp.target) for imp in found}
    # The whole code base was read, down to subpackages: the runs layer drives the kernel's loop.
    assert {("backend.runs.runner", "backend.engine.loop"), ("backend.data.providers.base", "backend.clock")} <= pairs
    assert layering_violations(found) == []


def test_no_two_packages_import_each_other() -> None:
    assert package_cycles(ROOT, first_party_imports(ROOT)) == []


def test_the_kernel_and_what_lies_below_runs_never_import_runs() -> None:
    found = first_party_imports(ROOT)
    kernel = {unit_of(imp.target) for imp in found if unit_of(imp.module) == "backend.engine"} - {"backend.engine"}
    assert kernel <= {"backend.audit", "backend.clock", "backend.config", "backend.errors", "backend.features", "backend.strategy", "execution"}
    upward = [str(imp) for imp in found if unit_of(imp.module) in BELOW_RUNS and unit_of(imp.target) in ("backend.runs", "backend.runtime", "scripts")]
    assert upward == []
    callers = {unit_of(imp.module) for imp in found if unit_of(imp.target) == "backend.runs"}
    assert {"backend.runtime", "scripts"} <= callers


def test_every_package_is_in_exactly_one_layer() -> None:
    declared = [unit for _, units in LAYERS for unit in units]
    assert len(declared) == len(set(declared))
    on_disk = {unit_of(module_name(ROOT, p)) for top in TOP_PACKAGES for p in (ROOT / top).rglob("*.py")} - {"backend"}
    assert sorted(on_disk - set(declared)) == [], "packages in no layer: place them in LAYERS"
    assert sorted(set(declared) - on_disk) == [], "layers name packages that do not exist"


# ---------------------------------------------------------------------------------------------- the checker


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_an_upward_import_inside_a_function_is_named_with_its_module_and_line(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "backend/__init__.py": "",
            "backend/data/__init__.py": "",
            "backend/data/feed.py": "import os\n\n\ndef bars():\n    from backend.runs.runner import load_bars\n    return load_bars\n",
            "backend/runs/__init__.py": "",
            "backend/runs/runner.py": "from backend.data.feed import bars\n",
        },
    )
    found = first_party_imports(root)
    rank = layer_index()
    assert [str(imp) for imp in found] == [
        "backend.data.feed imports backend.runs.runner (line 5)",
        "backend.runs.runner imports backend.data.feed (line 1)",
    ]
    assert layering_violations(found) == [
        f"backend.data.feed imports backend.runs.runner (line 5): backend.data (layer {rank['backend.data']}, inputs and records) "
        f"may not import the higher backend.runs (layer {rank['backend.runs']}, runs)"
    ]
    assert package_cycles(root, found) == [
        "circular dependency: backend.data -> backend.runs (backend.data.feed imports backend.runs.runner (line 5)); "
        "backend.runs -> backend.data (backend.runs.runner imports backend.data.feed (line 1))"
    ]


def test_a_peer_import_and_an_undeclared_package_are_refused(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "backend/engine/loop.py": "from backend.models import train\n",
            "backend/newpkg/x.py": "import backend.config.schema\n",
        },
    )
    kernel = layer_index()["backend.engine"]
    assert layering_violations(first_party_imports(root)) == [
        f"backend.engine.loop imports backend.models (line 1): backend.engine (layer {kernel}, kernel and models) "
        f"may not import its peer backend.models (layer {kernel}, kernel and models)",
        "backend.newpkg.x imports backend.config.schema (line 1): backend.newpkg is in no layer; "
        "place it in LAYERS (tests/unit/test_layering.py)",
    ]


def test_a_cycle_between_subpackages_is_found_through_relative_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "execution/__init__.py": "",
            "execution/orders/__init__.py": "from . import journal\n",
            "execution/orders/journal.py": "from ..accounting.portfolio import Fill\n",
            "execution/accounting/__init__.py": "",
            "execution/accounting/portfolio.py": "from execution.risk import gates\n",
            "execution/risk/__init__.py": "",
            "execution/risk/gates.py": "def f():\n    import execution.orders.journal\n",
        },
    )
    found = first_party_imports(root)
    assert "execution.orders imports execution.orders.journal (line 1)" in [str(imp) for imp in found]
    assert layering_violations(found) == []  # one package as far as the layers go
    assert package_cycles(root, found) == [
        "circular dependency: execution.accounting -> execution.risk (execution.accounting.portfolio imports "
        "execution.risk (line 1)); execution.risk -> execution.orders (execution.risk.gates imports "
        "execution.orders.journal (line 2)); execution.orders -> execution.accounting (execution.orders.journal "
        "imports execution.accounting.portfolio (line 1))"
    ]
