"""The /api sub-application (kit.api's route tables behind its middleware) and its OpenAPI 3.1
document, generated from the route tables and their pydantic models.

Bodies and answers are JSON Schema from `model_json_schema`, every model under
`components/schemas`; query parameters are the fields of a route's query model. OpenAPI 3.1 takes
pydantic's JSON Schema (draft 2020-12) as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kit.api import ApiRoute, ApiRoutes, auth_and_errors, body_required, ok
from kit.scopes import ANY

REF = "#/components/schemas/{model}"
_DESCRIPTIONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Malformed request",
                 401: "Missing or unknown token", 403: "The token's scopes do not include this route's",
                 404: "Not found", 409: "Conflict", 413: "Too large",
                 422: "Invalid"}


class ErrorAnswer(BaseModel):
    """Every /api refusal."""

    error: str
    message: str
    details: Any = None


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    """The fields of a path or query model as parameters."""
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        # An optional parameter is absent or text: a URL has no spelling for null.
        any_of = [s for s in prop.pop("anyOf", ()) if s != {"type": "null"}]
        if any_of:
            prop.update(any_of[0] if len(any_of) == 1 else {"anyOf": any_of})
        if prop.get("default", 0) is None:
            del prop["default"]
        param = {"name": name, "in": where, "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _operation(tag: str, route: ApiRoute, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    scopes = sorted(route.scopes) or ["admin"]
    op: dict[str, Any] = {"summary": route.summary, "tags": [tag], "operationId": route.handler.__name__,
                          "description": f"Scopes: {', '.join(scopes)} (a token with admin may use every route).",
                          "x-scopes": scopes}
    typed = {p["name"]: p for p in _parameters(route.params, "path")}
    params = [typed.get(n, {"name": n, "in": "path", "required": True, "schema": {"type": "string"}})
              for n in route.path_names] + _parameters(route.query, "query")
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": body_required(route.body), "content": {route.content_type: {"schema": refs[route.body]}}}
    answer = refs[route.response] if route.response is not None else {"type": "object"}
    if route.answers != "application/json":
        answer = {"type": "string"}  # a download (text/csv)
    error = {"application/json": {"schema": refs[ErrorAnswer]}}
    op["responses"] = {str(s): {"description": _DESCRIPTIONS.get(s, "Error"),
                                "content": {route.answers: {"schema": answer}} if s == route.status else error}
                       for s in route.statuses}
    return op


def openapi_spec(tables: Iterable[ApiRoutes]) -> dict[str, Any]:
    routes = [(table.tag, r) for table in tables for r in table.routes]
    models = list(dict.fromkeys([ErrorAnswer] + [m for _, r in routes for m in (r.body, r.response) if m]))
    refs, definitions = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    by_model = {m: refs[(m, "validation")] for m in models}
    paths: dict[str, Any] = {}
    for tag, r in routes:
        paths.setdefault("/api" + r.path, {})[r.method.lower()] = _operation(tag, r, by_model)
    return {
        "openapi": "3.1.0",
        "info": {"title": "distbot admin and shop API", "version": "1"},
        "components": {"schemas": definitions.get("$defs", {}),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "admin.token (every scope) or a token of [[admin.tokens]] with its scopes: "
                                          "shop, finance, ops, admin; each operation's x-scopes names who may use "
                                          "it, others get 403"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


class Spec:
    """An /api app's OpenAPI document, built the first time it is asked for: building it walks
    every model's JSON schema (tens of milliseconds), which every app a process makes would pay."""

    def __init__(self, tables: Iterable[ApiRoutes]):
        self.tables = tuple(tables)
        self._document: dict[str, Any] | None = None

    @property
    def document(self) -> dict[str, Any]:
        if self._document is None:
            self._document = openapi_spec(self.tables)
        return self._document


OPENAPI = web.AppKey("openapi", Spec)


def create_api_app(tables: Iterable[ApiRoutes]) -> web.Application:
    """The /api sub-application serving `tables`, and its description at /api/openapi.json."""
    docs = ApiRoutes("meta", scope=ANY)

    @docs.get("/openapi.json", summary="This OpenAPI 3.1 description of every /api route")
    async def openapi(request: web.Request) -> web.Response:
        return ok(request.app[OPENAPI].document)

    tables = [*tables, docs]
    api = web.Application(middlewares=[auth_and_errors])
    api[OPENAPI] = Spec(tables)
    for table in tables:
        for r in table.routes:
            api.router.add_route(r.method, r.router_path, r.endpoint)
    return api
