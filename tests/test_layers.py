"""The house is what docs/architecture.md says it is: the floors table there is read by this test,
and every import of ours (type-only ones included) is checked against it, read from the source with
ast (nothing is imported). Also: no import circle between modules, and module names unique across
the packages but for a feature and its rules (handlers/orders.py and domain/orders.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOOR_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(\w+)/`\s*\|")
TOOLS = ("tests", "bench", "devtools")  # above every floor: they import the product and devtools, not each other


def floors(doc: Path | None = None) -> dict[str, int]:
    """{package: floor} from the table under "## The floors" in docs/architecture.md."""
    text = (doc or ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The floors", 1)[1].split("\n## ", 1)[0]
    return {m.group(2): int(m.group(1)) for line in section.splitlines() if (m := FLOOR_ROW.match(line))}


def modules(root: Path, packages: set[str]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports_of(path: Path, name: str, ours: set[str]) -> list[tuple[str, int]]:
    """(the imported module's dotted name, line) for every import of ours in a file, type-only
    imports included; `from pkg import module` names the module."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return [(n, line) for n, line in found if n.split(".")[0] in ours]


def _feature(module: str) -> str | None:
    """The feature a handlers module belongs to (handlers.orders -> orders), None for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(root: Path = ROOT, doc: Path | None = None) -> list[str]:
    floor = floors(doc)
    ours = set(floor) | set(TOOLS)
    problems = [f"{p.name}/ is a package of ours missing from the floors table"
                for p in sorted(root.iterdir()) if (p / "__init__.py").exists() and p.name not in ours]
    for name, path in modules(root, set(floor) | set(TOOLS)).items():
        rel, top = path.relative_to(root).as_posix(), name.split(".")[0]
        for target, line in imports_of(path, name, ours):
            other = target.split(".")[0]
            if other == top:
                if top == "handlers" and _feature(target) not in (None, _feature(name)):
                    problems.append(f"{rel}:{line} imports {target}: a feature does not import another feature")
                continue
            if top in TOOLS:
                if other in TOOLS and not (other == "devtools" and top != "devtools"):
                    problems.append(f"{rel}:{line} imports {target}: {top}/ does not import {other}/")
            elif other in TOOLS or floor[other] >= floor[top]:
                problems.append(f"{rel}:{line} imports {target}: {top}/ (floor {floor[top]}) may import only "
                                f"lower floors, and {other}/ is floor {floor.get(other, 'above all')}")
    return problems


def circles(root: Path = ROOT) -> list[list[str]]:
    """The import circles between product modules (strongly connected components of two or more)."""
    floor = floors()
    mods = modules(root, set(floor))
    graph = {m: {t for t, _ in imports_of(p, m, set(floor)) if t in mods and t != m} for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_floors_table_is_there() -> None:
    floor = floors()
    assert floor["storage"] == 0 and floor["app"] == max(floor.values()), floor
    assert {"storage", "domain", "content", "kit", "wechat", "handlers", "sandbox", "app"} == set(floor)


def test_imports_point_down_the_floors() -> None:
    assert violations() == []


def test_no_import_circle() -> None:
    assert circles() == []


def test_module_names_are_unique_but_for_a_feature_and_its_rules() -> None:
    floor = floors()
    seen: dict[str, list[str]] = {}
    for name in modules(ROOT, set(floor)):
        if name.count("."):
            seen.setdefault(name.rsplit(".", 1)[1], []).append(name.split(".")[0])
    clashes = {leaf: tops for leaf, tops in seen.items()
               if len(tops) > 1 and not (len(tops) == 2 and "handlers" in tops
                                         and {"domain", "content"} & set(tops))}
    assert clashes == {}


@pytest.mark.parametrize("source,package,expected", [
    ("from handlers.orders import feature\n", "content", "content/ (floor 2) may import only lower floors"),
    ("import kit.chat\n", "storage", "storage/ (floor 0) may import only lower floors"),
    ("from content import store\n", "storage", "may import only lower floors"),
    ("from handlers import earnings\n", "handlers", "a feature does not import another feature"),
    ("from tests.conftest import make_config\n", "bench", "bench/ does not import tests/"),
    ("from app.factory import create_app\n", "wechat", "wechat/ (floor 4) may import only lower floors"),
])
def test_a_forbidden_import_is_found(tmp_path: Path, source: str, package: str, expected: str) -> None:
    for top in floors() | dict.fromkeys(TOOLS):
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / package / "intruder.py").write_text(source)
    found = violations(tmp_path, ROOT / "docs" / "architecture.md")
    assert found and all(expected in f for f in found), found
