"""The /api sub-application: bearer auth with scoped tokens (kit.scopes), the audit of every
mutating request (kit.auditing), JSON errors (a domain.refusals.Refusal raised anywhere beneath a route
becomes `{"error", "message", "details"}` here, once), and requests validated once.

A route declares its path parameters, query parameters and JSON body as pydantic models. Its
endpoint validates them before the handler runs and passes the parsed models on (`params=`,
`query=`, `body=`), so a handler never looks at raw input. The OpenAPI description (kit.openapi, which also builds the
sub-application) is generated from the same models: what the document promises and what the server accepts are one thing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from aiohttp import web
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, RootModel, ValidationError

from kit.auditing import audited, route_name
from kit.scopes import PRINCIPAL, ScopeSpec, bearer, scopes_of
from domain.catalogue import API, CONSOLE, audit_summary, say
from domain.config import Config
from domain.config_sections import ADMIN
from domain.formats import storable
from domain.refusals import Refusal
from domain.staff import role_names
from storage.db import json_text

log = logging.getLogger(__name__)

ApiHandler = Callable[..., Awaitable[web.StreamResponse]]
JSON = "application/json"
_PATH_PARAM = re.compile(r"{(\w+)}")


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message, "details": details}, status=status,
                             dumps=json_text, headers=headers)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=json_text)


# Who acts: "admin" (admin.token), "token:<name>" (a named token), "console:<8 hex>:<token name>".
ACTOR = web.RequestKey("actor", str)


def actor_of(request: web.Request) -> str:
    """Who is acting, kept with what admins change (rank changes, adjustments, ticket replies) and
    in the audit trail: the /api middleware and the console's guard name the token here."""
    return request.get(ACTOR, "admin")


# ---- request models ------------------------------------------------------------------------------
class ApiModel(BaseModel):
    """Base of the /api request models. A body's `noun` names it in its error codes
    (malformed_<noun>, invalid_<noun>). Patterns run on Python's re, the dialect of the tools that
    generate requests from the published schema, so that both read `\\S` alike."""

    model_config = ConfigDict(regex_engine="python-re")
    noun: ClassVar[str] = "body"


def _storable(at: Any) -> Any:
    if not storable(at):
        raise ValueError("the time is outside the calendar once in UTC")
    return at


Instant = Annotated[AwareDatetime, AfterValidator(_storable)]  # RFC 3339 with a zone, and a UTC time


def text(max_length: int) -> Any:
    """A string holding more than whitespace and at most `max_length` characters as sent; the
    handler gets it stripped. The schema says all of it (minLength, maxLength, pattern)."""
    return Annotated[str, Field(min_length=1, max_length=max_length, pattern=r"\S"), AfterValidator(str.strip)]


class PageQuery(ApiModel):
    """A list's page: `limit` rows from `offset` (the bound keeps OFFSET within a 64-bit integer)."""

    limit: int = Field(50, ge=1, le=200, description="at most this many")
    offset: int = Field(0, ge=0, le=2**62, description="rows to skip")


class IdParam(ApiModel):
    """A path's {id}: a row id, which the database keeps in a 64-bit integer."""

    id: int = Field(ge=1, le=2**63 - 1)


class RankAudience(BaseModel):
    ranks: list[str] = Field(min_length=1, description="rank keys from config; active distributors of these ranks")


def checked_audience(config: Config, audience: str | RankAudience, noun: str) -> Any:
    """An audience as stored: "all" or {"ranks": [...]} (sorted, once each); a rank key that the
    configuration does not know is refused with 422 (campaigns and contests alike)."""
    if not isinstance(audience, RankAudience):
        return "all"
    known = {r.key for r in config.ranks}
    unknown = [r for r in audience.ranks if r not in known]
    if unknown:
        raise Refusal(f"invalid_{noun}", f"Unknown rank keys: {', '.join(unknown)}.",
                      sentence=f"受众无效：没有这些等级：{'、'.join(unknown)}。",
                      details=[{"field": "audience.ranks", "problem": f"unknown rank {r!r}"} for r in unknown])
    return {"ranks": sorted(set(audience.ranks))}


def _is_malformed(error_type: str) -> bool:
    """A missing field or a wrong JSON type is malformed (400); anything else is a bad value (422)."""
    return error_type in ("missing", "union_tag_not_found") or error_type.endswith("_type")


def _problems(model: type[BaseModel], errors: list[Any]) -> list[dict[str, str]]:
    problems = []
    for e in errors:
        loc = e["loc"]
        if issubclass(model, RootModel) and len(loc) > 1:
            loc = loc[1:]  # a RootModel body here is a tagged union: its errors start with the tag
        field = ".".join(map(str, loc)) or str(e.get("ctx", {}).get("discriminator", "")).strip("'")
        problems.append({"field": field, "problem": e["msg"]})
    return problems


def refusal(model: type[ApiModel], part: str, error: ValidationError, named: str = "") -> Refusal:
    """The one place that turns a validation error into an answer; `named` is what a path named."""
    errors = error.errors(include_url=False, include_input=False)
    if part == "path":
        # A path that cannot name a resource names none.
        return Refusal("not_found", f"No {model.noun} {named!r}.")
    if part == "query":
        # A query string is all text: there is no wrong JSON type, every problem is malformed.
        problems = _problems(model, errors)
        return Refusal("bad_query", "Bad query parameters: " + "; ".join(
            f"{p['field']}: {p['problem']}" for p in problems), details=problems)
    if any(e["type"] == "json_invalid" for e in errors):
        return Refusal("malformed_json", "The request body is not valid JSON.")
    if any(not e["loc"] and e["type"].endswith("_type") for e in errors):
        return Refusal("malformed_json", "The request body must be a JSON object.")
    problems = _problems(model, errors)
    if any(_is_malformed(e["type"]) for e in errors):
        return Refusal(f"malformed_{model.noun}", f"The {model.noun} is missing fields or has fields of the "
                       "wrong JSON type.", details=problems)
    return Refusal(f"invalid_{model.noun}", f"The {model.noun} has invalid values.", details=problems)


def parse_text(model: type[ApiModel], part: str, values: Mapping[str, str]) -> ApiModel:
    """Path or query parameters as `model`: text, which converts to numbers where the model says so."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as e:
        raise refusal(model, part, e, "/".join(values.values())) from None


def body_required(model: type[BaseModel]) -> bool:
    """A body whose fields all have defaults may be left out (it reads as {})."""
    return any(f.is_required() for f in model.model_fields.values())


async def parse_body(model: type[ApiModel], request: web.Request) -> ApiModel:
    """The JSON body as `model`, strictly: `"12900"`, `129.0` and `true` are not integers."""
    raw = await request.read()
    try:
        return model.model_validate_json(raw if raw or body_required(model) else b"{}", strict=True)
    except ValidationError as e:
        raise refusal(model, "body", e) from None


# ---- routes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiRoute:
    """One /api route: what it takes, what it answers, and the handler that does the work."""

    method: str
    path: str
    handler: ApiHandler
    summary: str
    params: type[ApiModel] | None = None  # the {parameters} of the path; other paths get text
    query: type[ApiModel] | None = None
    body: type[ApiModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    content_type: str = JSON  # other bodies (multipart uploads) are read by the handler itself
    answers: str = JSON  # the media type of the success answer (text/csv: a streamed download)
    scopes: frozenset[str] = frozenset()  # who may use it (kit.scopes); empty: admin only

    def __post_init__(self) -> None:
        if self.params is not None:
            assert set(self.params.model_fields) <= set(self.path_names), self.path

    @property
    def path_names(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def router_path(self) -> str:
        """The path as the router matches it: a parameter its model makes an integer matches digits
        only, so that a fixed path beside it (POST /withdrawals/approve beside /withdrawals/{id}) is
        not also taken for an id, whose methods would then be in that path's Allow header."""
        ints = {n for n, f in self.params.model_fields.items() if f.annotation is int} if self.params else set()
        return _PATH_PARAM.sub(lambda m: f"{{{m[1]}:\\d+}}" if m[1] in ints else m[0], self.path)

    @property
    def parses_body(self) -> bool:
        return self.body is not None and self.content_type == JSON

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every status this route answers: its own, 401, 403 (a token outside its scopes), and the
        refusals of validation."""
        implied = {404} if self.params is not None else set()
        implied |= {400, 413, 422} if self.parses_body else {400} if self.query is not None else set()
        return tuple(sorted({self.status, 401, 403, *implied, *self.errors}))

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        models: dict[str, BaseModel] = {}
        if self.params is not None:
            models["params"] = parse_text(self.params, "path", request.match_info)
        if self.query is not None:
            # The first value of each name, as aiohttp's query.get() would give.
            models["query"] = parse_text(self.query, "query", {n: request.query.getone(n) for n in request.query})
        if self.parses_body:
            assert self.body is not None
            models["body"] = await parse_body(self.body, request)
        return await self.handler(request, **models)


class ApiRoutes:
    """A feature's /api routes: `api = ApiRoutes("orders", scope="shop")`, then
    `@api.post(path, summary=..., body=Model, response=Model, errors=(...))` on each handler;
    `scope=` on one route overrides the table's (kit.scopes)."""

    def __init__(self, tag: str, scope: ScopeSpec = None):
        self.tag = tag
        self.scope = scope
        self.routes: list[ApiRoute] = []

    def route(self, method: str, path: str, *, summary: str, params: type[ApiModel] | None = None,
              query: type[ApiModel] | None = None, body: type[ApiModel] | None = None,
              response: type[BaseModel] | None = None, status: int = 200, errors: Iterable[int] = (),
              content_type: str = JSON, answers: str = JSON,
              scope: ScopeSpec = None) -> Callable[[ApiHandler], ApiHandler]:
        def register(fn: ApiHandler) -> ApiHandler:
            self.routes.append(ApiRoute(method, path, fn, summary, params, query, body, response, status,
                                        tuple(errors), content_type, answers, scopes_of(scope, self.scope)))
            return fn
        return register

    def get(self, path: str, **doc: Any) -> Callable[[ApiHandler], ApiHandler]:
        return self.route("GET", path, **doc)

    def post(self, path: str, **doc: Any) -> Callable[[ApiHandler], ApiHandler]:
        return self.route("POST", path, **doc)

    def patch(self, path: str, **doc: Any) -> Callable[[ApiHandler], ApiHandler]:
        return self.route("PATCH", path, **doc)


# ---- the sub-application -------------------------------------------------------------------------
def route_of(request: web.Request) -> ApiRoute | None:
    """The /api route the request matched (None: no route, answered 404 or 405)."""
    route = getattr(request.match_info.handler, "__self__", None)
    return route if isinstance(route, ApiRoute) else None


@web.middleware
async def auth_and_errors(request: web.Request, handler: ApiHandler) -> web.StreamResponse:
    principal = bearer(request)
    if principal is None:
        return error_response(401, "unauthorized", say(API, "unauthorized"))
    request[PRINCIPAL], request[ACTOR] = principal, principal.api_actor
    route = route_of(request)

    async def answer() -> web.StreamResponse:
        if route is not None and not principal.may(route.scopes):
            needs = sorted(route.scopes) or [ADMIN]
            return error_response(403, "forbidden", say(
                API, "forbidden", name=principal.name, method=request.method, path=request.path,
                roles=role_names(needs, say(CONSOLE, "or")), needs=" / ".join(needs)), {"needs": needs})
        return await _answer(request, handler)
    return await audited(request, answer, principal=principal, actor=principal.api_actor,
                         success=route.status if route is not None else 404,
                         summary=audit_summary(route_name(route.handler) if route is not None else "no_such_route"))


async def _answer(request: web.Request, handler: ApiHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refusal as e:  # the one translation of a refusal for /api
        return error_response(e.status, e.code, e.message, e.details)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", say(API, "too_large"))
    except web.HTTPException as e:
        if e.status == 404:
            return error_response(404, "not_found", say(API, "no_route", method=request.method, path=request.path))
        if e.status == 405:
            return error_response(405, "method_not_allowed", say(API, "method_not_allowed", method=request.method,
                                                                 path=request.path),
                                  headers={"Allow": e.headers.get("Allow", "")})
        raise
    except Exception:
        log.exception("API error", extra={"path": request.path})
        return error_response(500, "internal", say(API, "internal"))
