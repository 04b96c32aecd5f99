"""Pack templates: Jinja2's sandbox with only the documented variables, on a budget.

Templates come from content packs, i.e. from outside the program. They see `distributor.name`,
`distributor.code`, `product.*` and `share_url`, nothing else: no globals beyond the harmless
built-ins, no attribute access to internals (``''.__class__`` is undefined, and undefined is an
error), no string formatting tricks, no changing a list or dict, only the plain methods of
strings, lists and dicts, and the output is capped. A render runs on the budget of
content.template_budget (100,000 steps, 100 ms, nothing built large), at upload and in chat alike.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment, SecurityError

from content import template_budget
from content.template_budget import OverBudget
from domain.formats import yuan

VARIABLES = frozenset({"distributor", "product", "share_url"})
MAX_OUTPUT_CHARS = 4000
MAX_EXPONENT = 64
# Filters that can build arbitrarily large output from a short template, or format strings.
_UNSAFE_FILTERS = ("center", "format", "indent", "wordwrap", "pprint", "xmlattr", "urlize", "filesizeformat")
_PLAIN_TYPES = (str, bytes, int, float, list, tuple, dict, set, frozenset)
# The methods of those a template may call: each costs at most the size of what it is called on
# (no widths to pad to, no joining, no translating tables).
_PLAIN_METHODS = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha", "isdecimal",
    "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower", "lstrip", "partition",
    "removeprefix", "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split",
    "splitlines", "startswith", "strip", "swapcase", "title", "upper", "get", "items", "keys", "values"})


class PackTemplateError(Exception):
    """A template that cannot be compiled or rendered; `line` when Jinja knows it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        template_budget.check_binop(operator_name, left, right)
        if operator_name == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting with % is not allowed in pack templates")
            return operator.mod(left, right)
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        return operator.add(left, right) if operator_name == "+" else operator.mul(left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        template_budget.step()  # a macro, a method: one step each, so recursion is counted
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> None:
        # str.format / format_map can pad to any width: refuse them (see is_safe_attribute)
        # instead of handing out Jinja's sandboxed formatter.
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in ("format", "format_map", "mro"):
            return False
        if isinstance(obj, _PLAIN_TYPES) and callable(value) and attr not in _PLAIN_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                   trim_blocks=True, lstrip_blocks=True)
    for name in _UNSAFE_FILTERS:
        env.filters.pop(name, None)
    env.filters = template_budget.metered_filters(env.filters)
    env.globals.clear()  # no range/dict/lipsum/cycler/joiner/namespace: templates fill in text
    return env


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Any:
    env = environment()
    return env.from_string(template_budget.metered(env.parse(source)))


@contextlib.contextmanager
def _compiling() -> Iterator[None]:
    """What reading a template can raise, as PackTemplateError."""
    try:
        yield
    except TemplateSyntaxError as e:
        raise PackTemplateError(e.message or "syntax error", e.lineno) from None
    except RecursionError:
        raise PackTemplateError("nested too deeply") from None
    except ValueError as e:  # a number too long to read
        raise PackTemplateError(str(e)) from None


def check(source: str) -> None:
    """Compile a template and check it names only documented variables; PackTemplateError if not."""
    with _compiling():
        tree = environment().parse(source)
        unknown = sorted(meta.find_undeclared_variables(tree) - VARIABLES)
        line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == unknown[0]), None) if unknown else None
    if unknown:
        raise PackTemplateError(
            f"unknown variable {unknown[0]!r}; templates see only distributor, product and share_url", line)
    with _compiling():
        _compiled(source)


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    """Render a pack template in the sandbox, on its budget; PackTemplateError on anything it may
    not do. Blocking (up to the budget's 100 ms): call it off the event loop."""
    with _compiling():
        template = _compiled(source)
    context = {k: v for k, v in variables.items() if k in VARIABLES}
    out: list[str] = []
    size = 0
    try:
        with template_budget.budget():
            for chunk in template.generate(context):
                out.append(chunk)
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    break
    except OverBudget as e:
        raise PackTemplateError(str(e)) from None
    except SecurityError as e:
        raise PackTemplateError(f"not allowed in a pack template: {e}") from None
    except TemplateError as e:
        raise PackTemplateError(_describe(e), getattr(e, "lineno", None)) from None
    except (ArithmeticError, TypeError, ValueError, LookupError, OverflowError, RecursionError) as e:
        raise PackTemplateError(f"{type(e).__name__}: {e}") from None
    return "".join(out)[:MAX_OUTPUT_CHARS].strip()


def _describe(e: TemplateError) -> str:
    msg = e.message or type(e).__name__
    if "has no attribute" in msg and "__" in msg:
        return "internal attributes are not available in pack templates"
    return msg


def product_variables(product: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees as `product`: the pack's fields plus the price as ¥129.00."""
    return {"sku": product["sku"], "name": product["name"], "price_fen": product["price_fen"],
            "price": yuan(product["price_fen"]), "selling_points": list(product.get("selling_points") or []),
            "url": product.get("url") or "", "details": dict(product.get("details") or {})}


def with_ref(url: str, code: str) -> str:
    """A shop page's link carrying the distributor's code as ?ref=CODE."""
    return f"{url}{'&' if '?' in url else '?'}ref={quote(code)}"


def share_page_url(public_url: str, code: str, sku: str | None = None) -> str:
    """Our share page of a distributor (/s/CODE), of one product with ?sku=."""
    base = f"{public_url.rstrip('/')}/s/{quote(code)}"
    return f"{base}?sku={quote(sku)}" if sku else base


def share_url(public_url: str, code: str, product: Mapping[str, Any] | None = None) -> str:
    """The distributor's link: the product's own page with ?ref=CODE when the pack gives one (and
    no buy_url), else our share page /s/CODE (with ?sku= for a product), whose buy button goes to
    the buy_url."""
    if product and product.get("url") and not product.get("buy_url"):
        return with_ref(product["url"], code)
    return share_page_url(public_url, code, product["sku"] if product else None)


def template_variables(public_url: str, name: str, code: str, product: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything a pack template may see, for one distributor (and product)."""
    variables: dict[str, Any] = {"distributor": {"name": name, "code": code},
                                 "share_url": share_url(public_url, code, product)}
    if product is not None:
        variables["product"] = product_variables(product)
    return variables


def sample_variables(product: Mapping[str, Any] | None) -> dict[str, Any]:
    """Values shaped like the real ones, for checking a pack's templates at upload."""
    variables: dict[str, Any] = {
        "distributor": {"name": "张三", "code": "K7QF2M"},
        "share_url": "https://example.com/s/K7QF2M",
    }
    if product is not None:
        variables["product"] = product
    return variables
