"""The package layout: no import cycle between modules or packages, and commands that start
without PyTorch or PEFT (the start-up times themselves are measured by benchmarks/startup.py)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pearl_cl

PACKAGE = Path(pearl_cl.__file__).parent
DATA = Path(__file__).parent / "data"


def _module_name(path: Path) -> str:
    return ".".join(("pearl_cl", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def _top_level_imports() -> dict[str, set[str]]:
    """Module → the pearl_cl modules it imports at module level (not inside functions or
    ``if TYPE_CHECKING``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pearl_cl"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("pearl_cl")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def test_no_import_cycle_between_modules_or_packages():
    graph = _top_level_imports()
    assert _cycle(graph) is None
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(_package(module), set()).update(_package(t) for t in targets if _package(t) != _package(module))
    assert _cycle(packages) is None
    assert "engine" not in packages["methods"] and "commands" not in packages["engine"]


def _heavy_modules_after(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint([m for m in ('torch', 'peft', 'transformers') "
                           "if m in sys.modules])"], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def test_help_imports_neither_pytorch_nor_peft_and_inspect_no_peft(tmp_path):
    assert _heavy_modules_after("from pearl_cl.commands import cli\n"
                                "for argv in (['--help'], ['run', '--help']):\n"
                                "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass") == []
    shutil.copytree(DATA / "run-v0.1", tmp_path / "run")
    assert _heavy_modules_after(f"from pearl_cl.commands import cli\ncli.main(['inspect', {str(tmp_path / 'run')!r}])") == ["torch"]
