"""String coupling between features (issue 21): a feature starts a job by its handle, never by
its name as a string (domain.jobs). Read from the source with ast, like tests/test_layers.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def job_owners() -> dict[str, str]:
    """Each job's name and the module that declares it (`@feature.job("name" or a JobRef, ...)`)."""
    refs = {}
    for path in sorted((ROOT / "domain").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "JobRef"):
                refs[ast.unparse(node.targets[0])] = ast.literal_eval(node.value.args[0])
    owners = {}
    for path in [*sorted((ROOT / "handlers").glob("*.py")), ROOT / "app" / "factory.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "job":
                first = node.args[0]
                name = first.value if isinstance(first, ast.Constant) else refs.get(ast.unparse(first).split(".")[-1])
                if isinstance(name, str):
                    owners[name] = path.relative_to(ROOT).as_posix()
    return owners


def string_starts() -> list[str]:
    """Every `…[JOBS].start("name", …)` or `jobs.start("name", …)` in handlers/, app/ and kit/."""
    owners, problems = job_owners(), []
    for path in sorted([*(ROOT / "handlers").glob("*.py"), *(ROOT / "app").glob("*.py"), *(ROOT / "kit").glob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "start"
                    and "jobs" in ast.unparse(node.func.value).lower() and node.args):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant | ast.JoinedStr):
                name = first.value if isinstance(first, ast.Constant) else "…"
                owner = owners.get(name, rel) if isinstance(name, str) else rel
                whose = f"{owner}'s job" if owner != rel else "a job"
                problems.append(f"{rel}:{node.lineno} starts {whose} {name!r} by string: pass its handle "
                                "(the Job its @feature.job returned, or a JobRef in domain/: domain.jobs)")
    return problems


def test_jobs_are_started_by_handle() -> None:
    assert string_starts() == []


def test_every_job_ref_names_a_declared_job() -> None:
    owners = job_owners()
    assert {"campaigns", "contests", "prune-outbox"} <= set(owners), owners
    assert owners["campaigns"] == "handlers/campaigns.py"  # declared with domain.campaigns.SEND_JOB


@pytest.mark.parametrize("source,expected", [
    ('app[JOBS].start("campaigns", "contests")\n', "handlers/campaigns.py's job 'campaigns' by string"),
    ('request.config_dict[JOBS].start("mine", "api")\n', "starts a job 'mine' by string"),
])
def test_a_job_started_by_string_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                          expected: str) -> None:
    for package in ("handlers", "app", "kit", "domain"):
        (tmp_path / package).mkdir()
    (tmp_path / "app" / "factory.py").write_text("")
    (tmp_path / "domain" / "campaigns.py").write_text('SEND_JOB = JobRef("campaigns")\n')
    (tmp_path / "handlers" / "campaigns.py").write_text('@feature.job(campaigns.SEND_JOB, "interval")\n'
                                                        "async def job(app): ...\n")
    (tmp_path / "handlers" / "contests.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = string_starts()
    assert len(found) == 1 and expected in found[0], found
