"""The /api sub-application: bearer auth, JSON errors, and an OpenAPI description built from the
same declarations that register the routes, so the two cannot drift apart."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.typedefs import CONFIG

log = logging.getLogger(__name__)

ApiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PATH_PARAM = re.compile(r"{(\w+)}")


class ApiError(Exception):
    """A clear JSON error: 400 malformed, 404, 409 conflict, 413 too large, 422 invalid."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    return web.json_response({"error": code, "message": message, "details": details}, status=status,
                             dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The request body must be a JSON object.")
    return data


@dataclass
class Route:
    method: str
    path: str
    handler: ApiHandler
    summary: str
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()


class ApiRoutes:
    """A feature module's /api routes with their documentation."""

    def __init__(self, tag: str):
        self.tag = tag
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, query: dict[str, str] | None = None,
              body: dict[str, Any] | None = None, response: dict[str, Any] | None = None,
              errors: Iterable[int] = ()) -> Callable[[ApiHandler], ApiHandler]:
        def register(fn: ApiHandler) -> ApiHandler:
            self.routes.append(Route(method, path, fn, summary, query or {}, body, response, tuple(errors)))
            return fn
        return register

    def get(self, path: str, **doc: Any) -> Callable[[ApiHandler], ApiHandler]:
        return self.route("GET", path, **doc)

    def post(self, path: str, **doc: Any) -> Callable[[ApiHandler], ApiHandler]:
        return self.route("POST", path, **doc)


@web.middleware
async def _auth_and_errors(request: web.Request, handler: ApiHandler) -> web.StreamResponse:
    expected = request.config_dict[CONFIG].admin.token
    given = request.headers.get("Authorization", "")
    # surrogateescape: aiohttp hands undecodable header bytes over as lone surrogates.
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {expected}".encode()):
        return error_response(401, "unauthorized", "A valid 'Authorization: Bearer <admin token>' header is required.")
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, e.details)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", "The request body is too large.")
    except web.HTTPException as e:
        if e.status == 404:
            return error_response(404, "not_found", f"No API route {request.method} {request.path}.")
        if e.status == 405:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}.")
        raise
    except Exception:
        log.exception("API error", extra={"path": request.path})
        return error_response(500, "internal", "An internal error occurred; nothing was changed.")


_ERROR_TEXT = {400: "Malformed request", 401: "Missing or wrong admin token", 404: "Not found",
               409: "Conflict", 413: "Too large", 422: "Invalid"}
_ERROR_SCHEMA = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string"}, "message": {"type": "string"}, "details": {}}}


def openapi_spec(tables: Iterable[ApiRoutes]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for table in tables:
        for r in table.routes:
            op: dict[str, Any] = {"summary": r.summary, "tags": [table.tag],
                                  "operationId": r.handler.__name__}
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in _PATH_PARAM.findall(r.path)]
            params += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}}
                       for n, d in r.query.items()]
            if params:
                op["parameters"] = params
            if r.body is not None:
                body = dict(r.body)
                content_type = body.pop("x-content-type", None) or "application/json"
                op["requestBody"] = {"required": True, "content": {content_type: {"schema": body}}}
            ok_status = "201" if r.method == "POST" and r.response and r.response.get("x-created") else "200"
            schema = {k: v for k, v in (r.response or {"type": "object"}).items() if k != "x-created"}
            responses: dict[str, Any] = {ok_status: {"description": "OK",
                                                     "content": {"application/json": {"schema": schema}}}}
            for status in (401, *r.errors):
                responses[str(status)] = {"description": _ERROR_TEXT.get(status, "Error"),
                                          "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
            op["responses"] = responses
            paths.setdefault("/api" + r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "distbot admin and shop API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def create_api_app(tables: Iterable[ApiRoutes]) -> web.Application:
    tables = list(tables)
    docs = ApiRoutes("meta")

    @docs.get("/openapi.json", summary="This OpenAPI 3 description of every /api route")
    async def openapi(request: web.Request) -> web.Response:
        return ok(spec)

    tables.append(docs)
    spec = openapi_spec(tables)
    api = web.Application(middlewares=[_auth_and_errors])
    for table in tables:
        for r in table.routes:
            api.router.add_route(r.method, r.path, r.handler)
    return api
