"""schemathesis against the live app, driven by the published /api/openapi.json: no server error,
no status the document does not list, a 405 names what is allowed, and no request the document
calls valid is refused for its shape. SQLite only, and few examples a route, to stay quick."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp.test_utils import TestServer
from schemathesis.config import SchemathesisConfig

from kit.openapi import OPENAPI, create_api_app
from app.factory import api_tables, create_app
from tests.conftest import ADMIN_TOKEN, make_config

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class LiveServer:
    """The app served by an aiohttp TestServer on its own event loop in a thread, since
    schemathesis' Python API calls it synchronously."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-api", daemon=True)
        self.server: TestServer | None = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> str:
        self.server = TestServer(create_app(make_config(self.db_url)))
        await self.server.start_server(access_log=None)  # from this thread, a line could reach a closed capture
        return str(self.server.make_url("")).rstrip("/")

    def __enter__(self) -> str:
        self.thread.start()
        return self._run(self._start())

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self._run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "distbot.db"
    with LiveServer(f"sqlite+aiosqlite:///{db}") as url:
        yield url


# The document the /api sub-application serves (test_the_served_document_is_the_one_fuzzed checks).
DOCUMENT = create_api_app(api_tables())[OPENAPI].document
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_dict({
    "headers": AUTH,
    "generation": {"max-examples": 15},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        # A schema-valid request may still meet a state the schema cannot describe: no such
        # distributor (404), an order already paid (409), an impossible transition (422).
        # Those are documented statuses; a 400 never is.
        "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422"]},
    },
    "operations": [
        # What a schema cannot say: the contents of an uploaded zip.
        {"include-method": "POST", "include-path": "/api/content-packs",
         "checks": {"positive_data_acceptance": {"enabled": False}}},
        # /api/orders/events is also /api/orders/{order_no} for an order numbered "events", so
        # OPTIONS rightly allows GET there; the check reads one path template only.
        {"include-path": "/api/orders/events", "checks": {"allow_header_conformance": {"enabled": False}}},
        # A body this simple gets integers spelled as whole floats (30000.0), which JSON Schema calls
        # integers and kit.api's strict reading refuses on purpose (money is never a float): 400.
        {"include-method": "PATCH", "include-path": "/api/contests/{id}",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409", "422"]}}},
    ],
}))


def test_the_served_document_is_the_one_fuzzed(live_url: str) -> None:
    with requests.get(live_url + "/api/openapi.json", headers=AUTH, timeout=10) as resp:
        assert resp.status_code == 200 and resp.json() == DOCUMENT


@schema.parametrize()
def test_the_api_keeps_to_its_document(case: Any, live_url: str) -> None:
    case.call_and_validate(base_url=live_url, headers=AUTH)
