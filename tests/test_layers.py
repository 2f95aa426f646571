"""The layers hold: core imports no component or job, components import no job, and no module
imports itself back through others. The imports are read from the source with ``ast``
(``if TYPE_CHECKING:`` blocks excluded), function-level imports included: a lazy import is still
a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("cli", "core", "integrations", "jobs", "plugins", "splitters", "testing")
#: What each layer must not import (prefixes of module names), from the bottom up: core <
#: components (plugins, splitters) < jobs < integrations < cli; the kits (testing) sit beside jobs.
FORBIDDEN = {
    "aunet.core": (
        "aunet.jobs",
        "aunet.plugins",
        "aunet.splitters",
        "aunet.testing",
        "aunet.integrations",
        "aunet.cli",
    ),
    "aunet.plugins": ("aunet.jobs", "aunet.testing", "aunet.integrations", "aunet.cli"),
    "aunet.splitters": ("aunet.jobs", "aunet.plugins", "aunet.testing", "aunet.integrations", "aunet.cli"),
    "aunet.jobs": ("aunet.testing", "aunet.integrations", "aunet.cli"),
    "aunet.testing": ("aunet.integrations", "aunet.cli"),
    "aunet.integrations": ("aunet.cli",),
}
#: The rooms of jobs, from the bottom up: a room imports only rooms below it.
ROOMS = ("runtime", "data", "runs", "inference", "train", "experiments")
#: Modules kept at their old names for what an older aunet wrote, each re-exporting its new home
#: (an exported model's remote code imports ``aunet.jobs.hf.bridge``; an older console script
#: ``aunet.jobs.cli``): the only imports against the arrows.
SHIMS = {"aunet.jobs.hf.bridge": "aunet.integrations.hf.bridge", "aunet.jobs.cli": "aunet.cli.main"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {"aunet": ROOT / "__init__.py", "aunet.__main__": ROOT / "__main__.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("aunet", *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)  # importlib.import_module("aunet.x"): a dependency like any other
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            strong(v)
    return found


def test_the_walker_sees_every_module_and_lazy_imports() -> None:
    edges = graph()
    assert {
        "aunet.core.model",
        "aunet.cli.main",
        "aunet.plugins.nn.transformer",
        "aunet.splitters.words",
        "aunet.integrations.hf.bridge",
        "aunet.jobs.train.loop",
    } <= set(edges)
    # A function-level import counts: the trainer builds models through the assembler.
    assert "aunet.core.model" in edges["aunet.jobs.train.loop"]
    # So does importlib.import_module with a literal name (the exported model's remote code).
    assert "aunet.integrations.hf.bridge" in edges["aunet.integrations.hf.modeling_aunet"]
    # TYPE_CHECKING imports do not.
    assert not any(m.startswith("aunet.core.modules") for m in edges["aunet.core.components"])


def test_there_is_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_the_detector_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downwards() -> None:
    bad = []
    for name, targets in graph().items():
        for layer, forbidden in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                bad += [
                    f"{name} imports {t}" for t in sorted(targets) if t.startswith(forbidden) and SHIMS.get(name) != t
                ]
    assert not bad, "\n".join(bad)


def test_the_rooms_of_jobs_import_only_rooms_below_them() -> None:
    def room(module: str) -> int | None:
        parts = module.split(".")
        return (
            ROOMS.index(parts[2]) if len(parts) > 3 and parts[:2] == ["aunet", "jobs"] and parts[2] in ROOMS else None
        )

    bad = [
        f"{name} imports {t}"
        for name, targets in graph().items()
        if room(name) is not None
        for t in sorted(targets)
        if room(t) is not None and room(t) > room(name)
    ]
    assert not bad, "\n".join(bad)


def test_the_job_tables_sit_below_every_room() -> None:
    # A run's spec (``aunet.jobs.config``) is read by every room (a run's directory, evaluation,
    # training): it imports core only, never a room, and without torch.
    targets = graph()["aunet.jobs.config"]
    assert not [t for t in targets if t.startswith("aunet.jobs")], sorted(targets)
    assert not [t for t in targets if t == "torch" or t.startswith("torch.")], sorted(targets)


def test_every_room_of_the_job_side_is_small() -> None:
    # A newcomer can tell a folder's room from its name: no folder of jobs, integrations or the
    # command line holds more than about 12 modules.
    for path in modules().values():
        if path.relative_to(ROOT).parts[0] in ("jobs", "integrations", "cli"):
            count = len(list(path.parent.glob("*.py")))
            assert count <= 13, f"{path.parent.relative_to(ROOT)} holds {count} modules"


def test_nothing_inside_imports_the_facade() -> None:
    # `aunet/__init__.py` re-exports from every layer; a module that imports it back makes a circle
    # through the facade.
    importers = sorted(name for name, targets in graph().items() if "aunet" in targets)
    assert importers == [], importers
