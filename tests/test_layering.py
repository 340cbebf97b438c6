"""Imports point one way: models and data at the bottom, then tasks, train, inference, serving,
and the commands on top (docs/architecture.md). Read from the source, so a new import that
breaks the order fails here before it turns into a circle."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmjax"

# Lowest first. A module may import modules of its own layer or of lower ones.
LAYERS = [
    ("lmjax.config", "lmjax.checkpoint", "lmjax.parallel", "lmjax.optim"),
    ("lmjax.data", "lmjax.models", "lmjax.rundir"),
    ("lmjax.eval", "lmjax.privacy", "lmjax.robust", "lmjax.explain"),
    ("lmjax.tasks",),
    ("lmjax.train",),
    ("lmjax.infer", "lmjax.convert", "lmjax.compress"),
    ("lmjax.serve", "lmjax.sweep"),
    ("lmjax.cli",),
]
# The entry points, hand-overs to lmjax.cli (the top layer): `python -m lmjax <command>` and
# `python -m lmjax.main` (the design card's spelling of `lmjax train`).
ENTRY_POINTS = {"lmjax.__main__", "lmjax.main"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _rank(module: str) -> int:
    if module in ENTRY_POINTS or module == "lmjax":
        return len(LAYERS) - 1
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _imports(path: Path, modules: dict) -> list[tuple[str, int, bool, str]]:
    """(imported lmjax module, line, inside a function?, the line's text) for each import."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from lmjax.x import y`: y may be a module or a name in lmjax.x
                names = [f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in modules
                         else child.module for a in child.names]
            for name in names:
                if name in modules:
                    found.append((name, child.lineno, inside, lines[child.lineno - 1]))
            visit(child, inside)

    visit(tree, False)
    return found


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    wrong = [f"{name} (layer {_rank(name)}) imports {target} (layer {_rank(target)}), line {line}"
             for name, path in modules.items()
             for target, line, _, _ in _imports(path, modules)
             if _rank(target) > _rank(name)]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    modules = _modules()
    graph = {name: {t for t, *_ in _imports(path, modules) if t != name}
             for name, path in modules.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                      if reaches(b, a, set())})
    assert not circles, circles


def test_imports_inside_functions_say_why():
    """Deferred imports are for start-up time or optional extras, and say so ('lazy')."""
    modules = _modules()
    silent = [f"{name}:{line}: {text.strip()}" for name, path in modules.items()
              for _, line, inside, text in _imports(path, modules)
              if inside and "lazy" not in text]
    assert not silent, "\n".join(silent)


def test_every_command_is_a_cli_module_with_help_and_an_example():
    """The one list (lmjax.cli.COMMANDS) and lmjax/cli/ name the same commands, and each
    command's docstring (its --help) shows it run as `lmjax <command>`."""
    from lmjax.cli import COMMANDS

    modules = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "common"}
    assert modules == set(COMMANDS), "lmjax/cli/ modules and lmjax.cli.COMMANDS differ"
    for command in COMMANDS:
        doc = ast.get_docstring(ast.parse((PACKAGE / "cli" / f"{command}.py").read_text()))
        assert doc and f"lmjax {command} " in doc, f"lmjax/cli/{command}.py: no example"


def test_the_only_entry_points_are_lmjax_and_lmjax_main():
    """One command surface: no module of the package runs as a script of its own."""
    scripts = {name for name, path in _modules().items()
               if re.search(r"^if __name__ == .__main__.:", path.read_text(), re.M)}
    assert scripts == ENTRY_POINTS, (f"{sorted(scripts - ENTRY_POINTS)}: make it a command, "
                                     "lmjax/cli/<command>.py listed in lmjax.cli.COMMANDS")
    shim = (PACKAGE / "main.py").read_text()
    assert 'launch("train")' in shim


def _task_probes(path: Path) -> list[str]:
    """Where a module outside lmjax/tasks/ compares a task's name (`cfg.task == 'lm'`), probes
    a task for an attribute (`hasattr(task, ...)`, `getattr(task, ...)`) or reaches into its
    data (`task.data`): the places that should ask the Task interface instead."""
    def ends_in_task(node) -> bool:
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
        return name == "task"

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        if any(isinstance(side, ast.Attribute) and side.attr == "task" for side in sides) and any(
                isinstance(side, (ast.Constant, ast.Tuple, ast.List, ast.Set)) and
                not (isinstance(side, ast.Constant) and side.value is None) for side in sides):
            found.append(f"{path.name}:{node.lineno}: compares a task's name")
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("hasattr", "getattr")
              and node.args and ends_in_task(node.args[0])):
            found.append(f"{path.name}:{node.lineno}: {node.func.id} on a task")
        elif isinstance(node, ast.Attribute) and node.attr == "data" and ends_in_task(node.value):
            found.append(f"{path.name}:{node.lineno}: reaches into task.data")
    return found


def test_nothing_outside_tasks_probes_a_task_or_compares_its_name():
    """Commands, the trainer and inference ask a task what it can do (capabilities, examples,
    extra metrics, the plain model): lmjax/tasks/base.py's interface."""
    outside = [path for name, path in _modules().items() if not name.startswith("lmjax.tasks")]
    probes = [p for path in outside for p in _task_probes(path)]
    assert not probes, "\n".join(probes)
    # The check itself finds what it looks for.
    sample = PACKAGE.parent / "tests" / "_probe_sample.py"
    try:
        sample.write_text("if cfg.task == 'lm' and hasattr(task, 'x'):\n    y = s.task.data\n")
        assert len(_task_probes(sample)) == 3
    finally:
        sample.unlink()
