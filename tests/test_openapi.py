"""GET /api/openapi.json: generated from the route tables and their pydantic models, it describes
every route the /api sub-application serves, with what each takes and every status it answers;
and the refusals of the shared /api machinery that schemathesis once found wanting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

from app.features import FEATURES
from app.factory import create_app
from kit.openapi import openapi_spec
from tests.conftest import make_config
from tests.db_support import migrated_sqlite


def api_subapp(app: web.Application) -> web.Application:
    return next(r.get_info()["app"] for r in app.router.resources() if r.get_info().get("prefix") == "/api")


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    return resolve(spec, spec["components"]["schemas"][ref.rsplit("/", 1)[1]])


async def test_the_document_describes_every_served_route(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(migrated_sqlite(tmp_path))))
    resp = await client.get("/api/openapi.json", headers={"Authorization": "Bearer test-admin-token"})
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"] == "3.1.0"
    served = {(route.method, route.resource.canonical) for route in api_subapp(client.app).router.routes()
              if route.method != "HEAD"}
    assert ("POST", "/api/orders/events") in served
    assert served == {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = (method, path)
            assert op["summary"] and op["operationId"], where
            params = {(p["in"], p["name"]) for p in op.get("parameters", ())}
            assert {n for kind, n in params if kind == "path"} == set(re.findall(r"{(\w+)}", path)), where
            statuses = set(op["responses"])
            assert "401" in statuses and "405" not in statuses and not any(s.startswith("5") for s in statuses)
            assert len([s for s in statuses if s.startswith("2")]) == 1, where
            if any(kind == "query" for kind, _ in params) or "requestBody" in op:
                assert "400" in statuses, where  # validation refuses
            for status, answer in op["responses"].items():
                if not status.startswith("2"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert resolve(spec, schema)["required"] == ["error", "message"], where
                else:  # JSON, or a download (the exports' CSV) as text
                    [(media, content)] = answer["content"].items()
                    assert media in ("application/json", "text/csv"), where
                    assert content["schema"] if media == "application/json" else content["schema"] == {
                        "type": "string"}, where
            for content in op.get("requestBody", {"content": {}})["content"].values():
                assert resolve(spec, content["schema"]), where


def test_the_models_say_what_validation_checks() -> None:
    spec = openapi_spec([f.api for f in FEATURES])
    event = resolve(spec, spec["paths"]["/api/orders/events"]["post"]["requestBody"]["content"]["application/json"]
                    ["schema"])
    kinds = {tuple(resolve(spec, s)["properties"]["type"].get("enum") or [resolve(spec, s)["properties"]["type"]
                                                                          ["const"]]): resolve(spec, s)
             for s in event["oneOf"]}
    assert {k for kind in kinds for k in kind} == {"paid", "shipped", "completed", "refunded", "cancelled"}
    paid, refunded = kinds[("paid",)], kinds[("refunded",)]
    assert set(paid["required"]) == {"event_id", "order_no", "type", "amount_fen", "distributor_code"}
    assert set(refunded["required"]) == {"event_id", "order_no", "type", "amount_fen"}
    assert paid["properties"]["amount_fen"] == {"type": "integer", "exclusiveMinimum": 0, "maximum": 10**12,
                                                "description": "the order amount", "title": "Amount Fen"}
    assert paid["properties"]["event_id"]["minLength"] == 1 and paid["properties"]["event_id"]["pattern"] == r"\S"
    page = next(p for p in spec["paths"]["/api/distributors"]["get"]["parameters"] if p["name"] == "page")
    assert page["schema"]["type"] == "integer" and page["schema"]["minimum"] == 1 and not page["required"]
    status = next(p for p in spec["paths"]["/api/withdrawals"]["get"]["parameters"] if p["name"] == "status")
    assert resolve(spec, status["schema"])["enum"] == ["pending", "approved", "rejected", "paid", "failed"]
    reject = spec["paths"]["/api/withdrawals/{id}/reject"]["post"]["requestBody"]["content"]["application/json"]
    assert resolve(spec, reject["schema"])["properties"]["reason"]["minLength"] == 1


async def test_what_the_fuzzer_found_stays_fixed(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(make_config(migrated_sqlite(tmp_path))))
    auth = {"Authorization": "Bearer test-admin-token"}
    # A 405 says what is allowed.
    resp = await client.delete("/api/distributors/K7QF2M", headers=auth)
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    assert (await resp.json())["error"] == "method_not_allowed"
    # An id that is not a number names nothing, even when str.isdigit says it is one.
    for wid in ("²", "١", "0", "9" * 20, "1.5"):
        resp = await client.post(f"/api/withdrawals/{wid}/approve", headers=auth)
        assert resp.status == 404, wid
        assert (await resp.json())["error"] == "not_found"
    # A multipart part header with a control character is a malformed body, not a server error.
    body = (b'--b\r\nContent-Disposition: form-data; name="\x13"\r\n\r\nx\r\n'
            b'--b\r\nContent-Disposition: form-data; name="pack"; filename="p.zip"\r\n\r\nPK\r\n--b--\r\n')
    resp = await client.post("/api/content-packs", data=body,
                             headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})
    assert resp.status == 400 and (await resp.json())["error"] == "malformed_multipart"
