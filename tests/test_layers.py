"""Layers point one way (docs/architecture.md): features → domain and rendering → storage. A test
that fails when a forbidden import appears, read from the source with ast (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("bot", "domain", "handlers", "content", "storage", "tests", "bench", "devtools")
# What each package may import of ours (besides itself).
ALLOWED = {
    "storage": set(),
    "domain": {"storage"},
    "content": {"domain", "storage"},
    "handlers": {"bot", "content", "domain", "storage"},
    "bot": {"content", "domain", "storage"},
    "bench": {"bot", "content", "domain", "handlers", "storage", "devtools"},
}
# bot/ is transport and wiring; only the wiring names the features.
WIRING = {"bot/features.py", "bot/cli.py"}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(the imported module's dotted name, line) for every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            # "from handlers import orders" names the module orders of the package handlers.
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if node.module in OURS]
    return found


def violations() -> list[str]:
    problems = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for name, line in imports_of(path):
                top = name.split(".")[0]
                if top not in OURS or top == package:
                    if package == "handlers" and name.startswith("handlers.") and name != "handlers.__init__":
                        problems.append(f"{rel}:{line} imports {name}: a feature does not import another "
                                        "feature (shared code belongs in domain/)")
                    continue
                if top == "handlers" and package == "bot" and rel in WIRING:
                    continue
                if top not in allowed:
                    problems.append(f"{rel}:{line} imports {name}: {package}/ may import only "
                                    f"{', '.join(sorted(allowed)) or 'nothing of ours'}")
    return problems


def test_layers_point_one_way() -> None:
    assert violations() == []


@pytest.mark.parametrize("source,package,expected", [
    ("from handlers.orders import feature\n", "content", "content/ may import only domain, storage"),
    ("import bot.chat\n", "storage", "storage/ may import only nothing of ours"),
    ("from content import store\n", "storage", "storage/ may import only nothing of ours"),
    ("from handlers import earnings\n", "handlers", "a feature does not import another feature"),
    ("from tests.conftest import make_config\n", "bench", "bench/ may import only"),
])
def test_a_forbidden_import_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, package: str,
                                     expected: str) -> None:
    fake = tmp_path / package
    fake.mkdir()
    (fake / "intruder.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = violations()
    assert found and all(expected in f for f in found), found
