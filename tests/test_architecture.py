"""The shape of the house: the core (`diffexpand/`) imports nothing above it and no Lightning; the data
module knows no particular method and never reaches into the LightningModule; no import cycles."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("diffexpand", "datamodules", "lightning_modules", "callbacks")
SHELLS = ("train", "expand", "sweep")
ABOVE_THE_CORE = ("lightning", "pytorch_lightning", "datamodules", "lightning_modules", "callbacks", *SHELLS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    files = {module_name(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}
    return files | {shell: REPO / f"{shell}.py" for shell in SHELLS}


def imports(name: str, path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_the_core_imports_nothing_above_it_and_no_lightning():
    offending = []
    for name, path in project_files().items():
        if name.split(".")[0] != "diffexpand":
            continue
        for imported in imports(name, path):
            if imported.split(".")[0] in ABOVE_THE_CORE:
                offending.append(f"{path.relative_to(REPO)} imports {imported}")
    assert not offending, offending


def test_the_expansion_data_module_knows_no_particular_method():
    path = REPO / "datamodules/expansion.py"
    assert "lightning_module" not in path.read_text()
    # the method interface: what a method is, what it plans from, builds with, and returns
    interface = ("base", "common", "inputs", "record", "registry")
    allowed = {f"diffexpand.methods.{m}" for m in interface}
    used = {m for m in imports("datamodules.expansion", path) if m.startswith("diffexpand.methods")}
    modules = {m for m in used if m in project_files()}  # leaves out the imported names
    assert modules and modules <= allowed, modules - allowed


def test_there_are_no_import_cycles():
    files = project_files()
    graph = {
        name: {m for m in imports(name, path, top_level_only=True) if m in files and m != name}
        for name, path in files.items()
    }
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
