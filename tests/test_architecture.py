"""The house rules, enforced: the engine's layers and its independence from Qt (import-linter's contracts in
pyproject.toml), and that importing the whole engine loads no Qt."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "qtpy", "superqt")


def _engine_modules() -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for p in sorted(ENGINE.rglob("*.py"))]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_engine_source_imports_qt():
    offenders = {p.name: sorted(_imported_roots(p) & set(QT_MODULES)) for p in ENGINE.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_every_engine_module_loads_no_qt():
    modules = _engine_modules()
    assert "engine.training.trainer" in modules and "engine.data.scan" in modules
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_contracts_are_kept():
    """engine.cli > project > outputs > training > models > data > core, and no GUI or Qt in the engine."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the dev dependencies"
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "0 broken" in done.stdout


MODALITY_NAMES = {"image", "text"}
MODALITY_TESTS = re.compile(r"\bis_text\w*|\bis_image\w*|\bbackbone_is_text\b|\bchosen_is_text\b")
MODALITY_PACKAGES = ROOT / "engine" / "modalities"


def _modality_branches(path: Path) -> list[str]:
    """Lines that decide by a modality's name: a comparison with 'image'/'text' (==, !=, in), a
    `.modality` compared with anything, or an is_text-style test."""
    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            named = any(isinstance(s, ast.Constant) and s.value in MODALITY_NAMES for s in sides)
            asks = any(isinstance(s, ast.Attribute) and s.attr == "modality" for s in sides)
            if named or asks:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    for number, line in enumerate(source.splitlines(), start=1):
        if MODALITY_TESTS.search(line):
            found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_outside_the_modality_packages_no_code_branches_on_a_modality_name():
    """Images and texts differ only inside engine.modalities: everything else asks the modality
    (engine.core.modality), so a third one plugs in without an `else` that means "not text, so image"."""
    files = [p for folder in (ROOT / "engine", ROOT / "gui") for p in folder.rglob("*.py")
             if MODALITY_PACKAGES not in p.parents]
    assert len(files) > 100
    branches = [line for path in sorted(files) for line in _modality_branches(path)]
    assert not branches, "\n".join(branches)


def _module_level_imports(path: Path, known: set[str]) -> set[str]:
    """The engine/gui modules `path` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                         for alias in node.names)
    return found & known


def test_no_import_cycles():
    """Every engine and gui module can be understood (and imported) before the ones that import it."""
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for folder in (ROOT / "engine", ROOT / "gui") for p in folder.rglob("*.py")}
    graph = {name: _module_level_imports(path, set(paths)) - {name} for name, path in paths.items()}
    assert graph["engine.cli.torchrun"], "the graph sees imports"
    done, active, cycles = set(), [], []

    def visit(name):
        if name in active:
            cycles.append(active[active.index(name):] + [name])
            return
        if name in done:
            return
        active.append(name)
        for other in sorted(graph[name]):
            visit(other)
        active.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
