"""The import graph of medseg, read from the source (AST, imports inside functions included).

docs/ARCHITECTURE.md: dependencies point one way, {api, cli} -> commands -> {planning, doctor, report}
-> training -> run folder -> {inference, post-processing} -> runtime -> config -> metrics ->
data -> {models, losses} -> errors. A module may import its own unit and the units below it;
units of one layer do not import each other; nothing has a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"

# top to bottom; each entry one layer, each name a unit (a module or a package with its submodules)
LAYERS: list[tuple[str, ...]] = [
    ("medseg.api", "medseg.cli"),
    ("medseg.commands",),
    ("medseg.planning", "medseg.doctor", "medseg.report"),
    ("medseg.training",),
    ("medseg.runfolder",),
    ("medseg.inference", "medseg.postprocess"),
    ("medseg.runtime",),
    ("medseg.config",),
    ("medseg.metrics",),
    ("medseg.data",),
    ("medseg.models", "medseg.losses"),
    ("medseg.errors",),
    ("medseg",),  # the package itself: only __version__
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every medseg module `path` imports, at the top or inside functions, resolved to module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == "medseg" or a.name.startswith("medseg."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod != "medseg" and not mod.startswith("medseg."):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in known else mod)
    out.discard(name)
    return out


def unit_of(module: str) -> str:
    units = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    return max(units, key=len)


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_belongs_to_a_layer():
    for name in all_modules():
        assert unit_of(name), name


def test_imports_point_down_only():
    bad = []
    for mod, targets in graph().items():
        unit = unit_of(mod)
        for t in targets:
            tu = unit_of(t)
            if tu == unit:
                continue
            if layer_of(tu) <= layer_of(unit):
                bad.append(f"{mod} -> {t} ({'same layer' if layer_of(tu) == layer_of(unit) else 'upward'})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def _cycle(g: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path, or []."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in g}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        colour[n] = GREY
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if m not in colour:
                continue
            if colour[m] == GREY:
                return stack[stack.index(m):] + [m]
            if colour[m] == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return []

    for n in sorted(g):
        if colour[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle():
    cycle = _cycle(graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The cycle finder finds a planted cycle, and the layer rule flags a planted upward import."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
    fake = tmp_path / "medseg" / "metrics" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from medseg.commands.fit import fit\n    from ..training import SegModule\n")
    global PACKAGE
    real, PACKAGE = PACKAGE, tmp_path / "medseg"
    try:
        found = imports_of("medseg.metrics.x", fake, {"medseg.commands.fit", "medseg.training"})
    finally:
        PACKAGE = real
    assert found == {"medseg.commands.fit", "medseg.training"}
    assert layer_of(unit_of("medseg.commands.fit")) < layer_of(unit_of("medseg.metrics.x"))


@pytest.mark.parametrize("module", ["medseg.cli", "medseg.commands.fit", "medseg.doctor", "medseg.report", "medseg.planning"])
def test_modules_import(module):
    __import__(module)
