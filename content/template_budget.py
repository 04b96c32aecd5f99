"""The budget of one pack-template render (CONTRACT §7): at most 100,000 steps and 100 ms.

A step is a loop's turn, a call (a macro, a method), a filter or an arithmetic operator; each
step also looks at the clock, so a render that runs out of either stops where it is instead of
running on in a thread nobody can stop. That only holds if no single operation can take long by
itself, so nothing a template computes may grow large: strings and lists it builds (with `*`,
`+`, `~`, `join`, `replace`, ...) hold at most MAX_VALUE characters or items, numbers at most
MAX_INT_BITS bits, and all it prints, also into a `{% set %}` block or a macro's result, at most
MAX_PRINTED characters.

The counting is put into the template itself: `metered` rewrites the parsed template so that every
loop iterates through STEPS and every printed piece and `~` goes through PRINTED and CONCAT,
filters whose names no template can write (they are not identifiers).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import TemplateSyntaxError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SecurityError
from jinja2.visitor import NodeTransformer

MAX_STEPS = 100_000
MAX_SECONDS = 0.1
MAX_VALUE = 10_000  # longest string or list (counting what it holds) a template may build
MAX_PRINTED = 100_000  # characters a render may print in all, captured or not
MAX_INT_BITS = 4096
STEPS, PRINTED, CONCAT = "budget:steps", "budget:printed", "budget:concat"


class OverBudget(Exception):
    """A render that needs more steps or time than a pack template may have."""


class Budget:
    """What is left of one render's steps, printed characters and time."""

    def __init__(self, steps: int = MAX_STEPS, seconds: float = MAX_SECONDS, printed: int = MAX_PRINTED):
        self.steps, self.printed = steps, printed
        self.max_steps, self.seconds = steps, seconds
        # The render's own CPU time, not the wall clock's: on a loaded machine (a pack uploaded
        # during a promotion) a cheap template must not be refused for waiting its turn.
        self.deadline = time.thread_time() + seconds

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise OverBudget(f"needs more than {self.max_steps:,} loop steps")
        if not self.steps % 64 and time.thread_time() > self.deadline:  # a clock read every 64 steps
            raise OverBudget(f"takes more than {self.seconds * 1000:.0f} ms of CPU")

    def print(self, chars: int) -> None:
        self.printed -= chars
        if self.printed < 0:
            raise OverBudget(f"prints more than {MAX_PRINTED:,} characters")


_BUDGET: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


@contextlib.contextmanager
def budget(seconds: float = MAX_SECONDS, steps: int = MAX_STEPS) -> Iterator[Budget]:
    """A fresh budget for the renders inside the block (one render: render_template)."""
    fresh = Budget(steps, seconds)
    token = _BUDGET.set(fresh)
    try:
        yield fresh
    finally:
        _BUDGET.reset(token)


def step() -> None:
    """One step of the current render (none outside a render: Jinja folding constants at compile)."""
    current = _BUDGET.get()
    if current is not None:
        current.step()


def size(value: Any, limit: int = MAX_VALUE) -> int:
    """About how long a value's text is: strings their length, numbers their digits, lists and
    dicts what they hold; counting stops once past `limit`, so this costs at most that much."""
    total, todo = 0, [value]
    while todo and total <= limit:
        v = todo.pop()
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 1
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 1
        elif isinstance(v, Mapping):
            total += len(v)
            if total <= limit:
                todo.extend(v.keys())
                todo.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += len(v)
            if total <= limit:
                todo.extend(v)
        else:
            total += 1
    return total


def small(value: Any, what: str = "value") -> Any:
    if size(value) > MAX_VALUE:
        raise SecurityError(f"{what} longer than {MAX_VALUE:,} characters or items")
    return value


# ---- operators ------------------------------------------------------------------------------
_SEQUENCES = (str, list, tuple)


def check_binop(operator_name: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**` and `+` whose result would be too large, before computing it."""
    step()
    if operator_name == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(n, int) and size(seq) * n > MAX_VALUE:
                raise SecurityError("repetition too large")
        if _ints(left, right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError("number too large")
    elif operator_name == "**":
        if _ints(left, right) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError("number too large")
    elif operator_name == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        if size(left) + size(right) > MAX_VALUE:
            raise SecurityError("string or list too long")


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


# ---- what the rewritten template calls ---------------------------------------------------------
@pass_context
def _steps(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        step()
        yield item


@pass_context
def _printed(context: Context, value: Any) -> str:
    text = value if isinstance(value, str) else str(small(value))
    current = _BUDGET.get()
    if current is not None:
        current.print(len(text))
    return text


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    if sum(size(p) for p in parts) > MAX_VALUE:
        raise SecurityError(f"string longer than {MAX_VALUE:,} characters")
    return "".join(map(str, parts))


class _Metered(NodeTransformer):
    """Loops through STEPS, printed pieces through PRINTED, `~` through CONCAT."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        if node.recursive:
            raise TemplateSyntaxError("recursive loops are not allowed in pack templates", node.lineno)
        node.iter = _filter(node.iter, STEPS)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filter(child, PRINTED) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filter(nodes.List(node.nodes, lineno=node.lineno), CONCAT)


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def metered(tree: nodes.Template) -> nodes.Template:
    """The parsed template, rewritten to count its steps and what it prints."""
    _Metered().visit(tree)
    return tree


# ---- filters ----------------------------------------------------------------------------------
def _join(original: Callable[..., str]) -> Callable[..., str]:
    def join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(value)
        if sum(size(x) for x in items) + max(len(items) - 1, 0) * size(d) > MAX_VALUE:
            raise SecurityError(f"join longer than {MAX_VALUE:,} characters")
        return original(eval_ctx, items, d, attribute)
    return join


def _replace(original: Callable[..., str]) -> Callable[..., str]:
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
        s, old, new = str(s), str(old), str(new)
        found = s.count(old) if count is None or count < 0 else min(s.count(old), count)
        if len(s) + found * (len(new) - len(old)) > MAX_VALUE:
            raise SecurityError(f"replace longer than {MAX_VALUE:,} characters")
        return original(eval_ctx, s, old, new, count)
    return replace


def _pieces(n: Any, fill_with: Any) -> None:
    """batch(n) and slice(n) build lists of n pieces or of n items each."""
    if isinstance(n, int) and size(fill_with) * n > MAX_VALUE:
        raise SecurityError(f"more than {MAX_VALUE:,} pieces")


def _batch(original: Callable[..., Any]) -> Callable[..., Any]:
    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        _pieces(linecount, fill_with)
        return original(value, linecount, fill_with)
    return batch


def _slice(original: Callable[..., Any]) -> Callable[..., Any]:
    def slice_(eval_ctx: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
        _pieces(slices, fill_with)
        return original(eval_ctx, value, slices, fill_with)
    return slice_


def _sum(original: Callable[..., Any]) -> Callable[..., Any]:
    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, (int, float)):
            raise SecurityError("sum adds up numbers only")  # adding up lists costs their square
        return original(environment, iterable, attribute, start)
    return sum_


_GUARDS = {"join": _join, "replace": _replace, "batch": _batch, "slice": _slice, "sum": _sum}


def _counted(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)  # keeps jinja_pass_arg, so Jinja passes the same first argument
    def counted(*args: Any, **kwargs: Any) -> Any:
        step()
        for value in (*args, *kwargs.values()):
            if isinstance(value, (str, list, tuple, dict, set, frozenset)):
                small(value, "a filter's input")
        return f(*args, **kwargs)
    return counted


def metered_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The filters, each a step with inputs of bounded size; those that can build large
    results refuse to before building them; and the three the rewritten template calls."""
    out = {}
    for name, f in filters.items():
        guard = _GUARDS.get(name)
        out[name] = _counted(functools.wraps(f)(guard(f)) if guard else f)
    return {**out, STEPS: _steps, PRINTED: _printed, CONCAT: _concat}
