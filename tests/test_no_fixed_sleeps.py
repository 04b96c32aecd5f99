"""No test waits a fixed time for something to happen: it asks again until it holds
(tests/eventually.py), or moves a clock. A sleep of more than 0.05 s with a literal in it is
allowed only where the time itself is what the test models, each with its reason below."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

TESTS = Path(__file__).parent
LONGEST = 0.05
# (file pattern, enclosing function or "*") -> why that sleep is the point of the test.
ALLOWED: dict[tuple[str, str], str] = {
    ("test_jobs.py", "slow"): "a slow job: two requests must overlap it to show it never runs twice at once",
    ("test_jobs.py", "test_one_contender_leads_and_a_broken_leader_connection_steps_down"):
        "three rounds of the other contender's 0.1 s polls, each of which must fail to lead",
    ("test_writer.py", "test_a_unit_runs_on_the_loop_when_the_lock_is_free_and_in_the_thread_when_not"):
        "another connection holds SQLite's write lock a while: the unit must still be waiting after it",
    ("test_writer.py", "test_a_batch_waits_for_another_writer_without_holding_up_the_loop"):
        "another process holds SQLite's write lock a while: the loop must serve meanwhile",
    ("test_outbox.py", "test_a_user_who_does_not_follow_is_not_retried"):
        "longer than the first back-off: a retry would have come by then",
    ("test_outbox.py", "slow_custom"): "a slow WeChat call, so that a stop finds a send on the wire",
    ("test_dedupe.py", "test_retry_of_a_late_reply_does_not_deliver_it_twice"):
        "the reply deadline (0.3 s) again: a second run of the handler would have started by then",
    ("test_dedupe.py", "test_retry_while_the_slow_reply_is_still_running_gets_it_passively"):
        "the reply deadline (0.3 s) again: a second run of the handler would have started by then",
    ("test_dedupe.py", "test_a_failure_while_sending_a_late_reply_does_not_stop_the_bot"):
        "as long as the slow work (SLOW_SECONDS): its late reply has been tried by then",
    ("test_dedupe.py", "test_later_work_with_a_first_reply_answers_at_once_and_follows_through_the_outbox"):
        "as long as the slow work (SLOW_SECONDS): a second run of it would have sent by then",
}


def sleeps(tree: ast.AST) -> list[tuple[str, int, float]]:
    """(enclosing function, line, longest literal) of each asyncio.sleep / time.sleep whose argument
    holds a number literal over LONGEST."""
    found: list[tuple[str, int, float]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr == "sleep"
                    and isinstance(child.func.value, ast.Name) and child.func.value.id in ("asyncio", "time")
                    and child.args):
                literals = [n.value for n in ast.walk(child.args[0])
                            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float))]
                if literals and max(literals) > LONGEST:
                    found.append((where, child.lineno, max(literals)))
            visit(child, inner)
    visit(tree, "<module>")
    return found


def allowed(file: str, function: str) -> bool:
    return any(fnmatch(file, pattern) and where in ("*", function) for pattern, where in ALLOWED)


def test_no_fixed_sleep_waits_for_something_to_happen() -> None:
    offenders = [f"tests/{path.name}:{line} sleeps {seconds} s in {function}"
                 for path in sorted(TESTS.glob("*.py"))
                 for function, line, seconds in sleeps(ast.parse(path.read_text(encoding="utf-8")))
                 if not allowed(path.name, function)]
    assert offenders == [], ("wait with tests.eventually.eventually (or move the clock); a sleep that models "
                             "time on purpose goes into ALLOWED with its reason:\n" + "\n".join(offenders))


def test_every_allowance_is_still_needed() -> None:
    used = {(pattern, where) for path in TESTS.glob("*.py")
            for function, _, _ in sleeps(ast.parse(path.read_text(encoding="utf-8")))
            for pattern, where in ALLOWED if fnmatch(path.name, pattern) and where in ("*", function)}
    assert set(ALLOWED) - used == set(), "allowances no sleep needs any more: prune them"


def test_the_finder_sees_a_fixed_sleep() -> None:
    code = "async def f():\n    await asyncio.sleep(0.3)\n    await asyncio.sleep(0.01)\n    time.sleep(x + 0.2)\n"
    assert sleeps(ast.parse(code)) == [("f", 2, 0.3), ("f", 4, 0.2)]
