"""The layer rules of docs/architecture.md, held on lowres's import graph (imports inside functions included).

Contract: every module belongs to one layer; a module imports only modules of its own layer or of the layers
below it; and there is no import circle anywhere in lowres/ (a package's ``__init__`` counts as a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lowres"

# lowest first; a module's layer is the first entry that names it or a package above it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("bottom", ("lowres", "lowres.config", "lowres.config_engine", "lowres.fsutil", "lowres.runtime",
                "lowres.progress", "lowres.audiotime")),
    ("data", ("lowres.data",)),
    ("model", ("lowres.model",)),
    ("sources", ("lowres.runs", "lowres.bases", "lowres.decode", "lowres.ctc_align", "lowres.units", "lowres.lm", "lowres.synth")),
    ("tasks", ("lowres.train", "lowres.evaluate", "lowres.inference", "lowres.zeroshot", "lowres.pseudolabel",
               "lowres.align", "lowres.deploy", "lowres.selftrain")),
    ("commands", ("lowres.cli", "lowres.demo", "lowres.demo_real", "lowres.__main__")),
]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the lowres modules it imports anywhere in its text (``from lowres.x import y`` counts as an import
    of ``lowres.x.y`` when that is a module, else of ``lowres.x``)."""
    mods = modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("lowres")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("lowres"):
                    found |= {resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                              for a in node.names}
        found.discard(name)
        graph[name] = found
    return graph


def layer_of(module: str) -> int:
    best = None
    for rank, (_, names) in enumerate(LAYERS):
        for prefix in names:
            if module == prefix or (prefix != "lowres" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return best[0]


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_imports_go_down_the_layers():
    wrong = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
             for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) > layer_of(m)]
    assert not wrong, "imports against the layer rules:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_function_level_imports():
    graph = import_graph()
    assert "lowres.bases" in graph["lowres.train.tasks.ctc"]  # imported inside a method
    assert "lowres.data.corpora.table" in graph["lowres.data.corpora"]  # the registry's function-level import


def test_kenlm_is_no_dependency_of_lowres():
    """The lm extra is flashlight-text alone: lowres estimates and writes its n-gram models itself and never
    imports the kenlm package (which builds from source); only test_lm compares against it, from its own extra."""
    import tomllib

    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "kenlm" for n in names), f"{name} imports kenlm"
    extras = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(req.startswith("kenlm") for req in extras["lm"]), extras["lm"]
    assert any(req.startswith("flashlight-text") for req in extras["lm"])


LONGEST_FUNCTION = 120  # lines, docstring included (issue #27: build_lm had grown to 194)


def test_no_function_is_longer_than_the_limit():
    """A function that outgrows the limit is split into named steps (it was the CTC loop, the LM builder)."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"over {LONGEST_FUNCTION} lines: {long}"
