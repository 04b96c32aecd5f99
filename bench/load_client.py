"""The load client of bench/webhook.py, run as its own process so that it does not share the bench's
event loop or core:

    python bench/load_client.py < spec.json      # prints one line of JSON: the run's figures

The spec (bench/webhook.py's `load_spec`) names the server's port and pid, the token, AES key and
AppID, the openids and texts, the warm-up and measured seconds, the concurrency and the first MsgId.
`--concurrency` senders, one keep-alive connection each (raw HTTP/1.1 over asyncio streams, `Conn`:
cheaper than aiohttp's client, so the client is not the limit), post signed (safe mode: encrypted)
text messages in a closed loop until the warm-up and the measured window are over. Off the clock,
every response is checked (HTTP 200, XML, safe: MsgSignature and decryption, a text, image or news
reply to its sender from the account). The client samples its own CPU, the server's (and the
throw-away PostgreSQL cluster's) and the machine's at both ends of the measured window.

`Wire` (build signed, encrypted requests as WeChat does and open the replies), `sign` and
`TEXT_XML` are also what bench/webhook.py seeds its users with and bench/orders.py signs its
收益 messages with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import signal
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import cpu_seconds, interrupt, machine_cpu, tree_cpu  # noqa: E402

ACCOUNT = "gh_bench00000001"
REQUEST_TIMEOUT = 10.0
MAX_REQUESTS = 2_000_000  # hard cap per load run, whatever the duration


# ---- the WeChat side of the wire: sign, encrypt, open replies ----------------------------------
def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


TEXT_XML = ("<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            "<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]>"
            "</Content><MsgId>{msg_id}</MsgId></xml>")
EVENT_XML = ("<xml><ToUserName><![CDATA[{account}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
             "<CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>"
             "<EventKey><![CDATA[]]></EventKey></xml>")
SAFE_XML = "<xml><ToUserName><![CDATA[{account}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"


class Wire:
    """Builds webhook requests the way WeChat signs (and encrypts) them and opens the replies."""

    def __init__(self, token: str, aes_key: str, app_id: str, account: str = ACCOUNT):
        from wechatpy.crypto import PrpCrypto
        self.token, self.app_id, self.account = token, app_id, account
        self.crypto = PrpCrypto(base64.b64decode(aes_key + "=")) if aes_key else None
        self._nonce = secrets.randbits(40)

    def text(self, openid: str, content: str, msg_id: int) -> tuple[str, bytes]:
        return self._envelope(openid, TEXT_XML.format(account=self.account, openid=openid, ts=int(time.time()),
                                                       content=content, msg_id=msg_id))

    def event(self, openid: str, event: str, create_time: int) -> tuple[str, bytes]:
        return self._envelope(openid, EVENT_XML.format(account=self.account, openid=openid, ts=create_time,
                                                        event=event))

    def _envelope(self, openid: str, xml: str) -> tuple[str, bytes]:
        """(path with query, body) of the POST."""
        timestamp = str(int(time.time()))
        self._nonce += 1
        nonce = format(self._nonce, "x")
        path = (f"/wechat?signature={sign(self.token, timestamp, nonce)}&timestamp={timestamp}&nonce={nonce}"
                f"&openid={openid}")
        if self.crypto is None:
            return path, xml.encode()
        encrypted = self.crypto.encrypt(xml, self.app_id).decode()
        path += f"&encrypt_type=aes&msg_signature={sign(self.token, timestamp, nonce, encrypted)}"
        return path, SAFE_XML.format(account=self.account, encrypted=encrypted).encode()

    def open_reply(self, body: bytes, openid: str) -> str:
        """The Content of a text reply to `openid` (image/news: the MsgType); ValueError on anything else."""
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            raise ValueError(f"not XML: {body[:80]!r}") from e
        if self.crypto is not None:
            encrypted, sig = root.findtext("Encrypt"), root.findtext("MsgSignature")
            ts, nonce = root.findtext("TimeStamp"), root.findtext("Nonce")
            if not (encrypted and sig and ts and nonce):
                raise ValueError("safe-mode reply without Encrypt/MsgSignature/TimeStamp/Nonce")
            if sign(self.token, ts, nonce, encrypted) != sig:
                raise ValueError("bad MsgSignature on the reply")
            try:
                root = ET.fromstring(self.crypto.decrypt(encrypted, self.app_id).encode())
            except Exception as e:
                raise ValueError(f"cannot decrypt the reply: {e}") from None
        if root.findtext("ToUserName") != openid or root.findtext("FromUserName") != self.account:
            raise ValueError("reply addressed to the wrong user or from the wrong account")
        kind = root.findtext("MsgType")
        if kind == "text":
            content = root.findtext("Content") or ""
            if not content:
                raise ValueError("empty Content")
            return content
        if kind == "image" and root.findtext("Image/MediaId"):
            return "image"
        if kind == "news" and root.find("Articles/item") is not None:
            return "news"
        raise ValueError(f"not a text, image or news reply: MsgType={kind!r}")


# ---- a small HTTP/1.1 keep-alive client over asyncio streams ----------------------------------
class Conn:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        """(status, content-type, body). Reconnects when needed; raises OSError/asyncio errors."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.port, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, ctype, close = -1, b"", False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"content-type":
                ctype = value.strip()
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length < 0:
            raise ConnectionError("response without Content-Length")
        data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, ctype, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---- the load run ---------------------------------------------------------------------------------
async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    wire = Wire(spec["token"], spec["aes_key"], spec["app_id"])
    openids: list[str] = spec["openids"]
    texts: list[str] = spec["texts"]
    port, server_pid = spec["port"], spec["server_pid"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + spec["warmup"]
    measure_to = measure_from + spec["seconds"]
    counter = iter(range(MAX_REQUESTS))
    records: list[tuple[float, float, int, int, int, bytes, bytes]] = []
    errors: dict[str, int] = {}
    samples: dict[str, Any] = {}

    db_pid = spec.get("db_pid")

    def sample(name: str) -> None:
        samples[name] = (loop.time(), time.process_time(), cpu_seconds(server_pid), machine_cpu(),
                         tree_cpu(db_pid) if db_pid else 0.0)

    loop.call_at(measure_from, sample, "from")
    loop.call_at(measure_to, sample, "to")

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def sender() -> None:
        conn = Conn(port)
        try:
            while loop.time() < measure_to:
                n = next(counter, None)
                if n is None:
                    return
                user = n % len(openids)
                text = (n // len(openids)) % len(texts)
                path, body = wire.text(openids[user], texts[text], spec["msg_id_base"] + n)
                t0 = loop.time()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        status, ctype, data = await conn.post(path, body)
                except TimeoutError:
                    conn.close()
                    error("timeout")
                    continue
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                    conn.close()
                    error(f"connection: {type(e).__name__}")
                    await asyncio.sleep(0.01)
                    continue
                records.append((t0, loop.time(), user, text, status, ctype, data))
        finally:
            conn.close()

    await asyncio.gather(*(sender() for _ in range(spec["concurrency"])))

    # Off the clock: check every response.
    latencies, completed_in_window, replies = [], 0, 0
    for t0, t1, user, _text, status, ctype, data in records:
        if status == 200 and data.strip() == b"success":
            error("answered 'success' (reply deferred past the deadline)")
            continue
        if status != 200:
            error(f"HTTP {status}")
            continue
        if not ctype.startswith(b"application/xml") and not ctype.startswith(b"text/xml"):
            error(f"content-type {ctype.decode(errors='replace')}")
            continue
        try:
            wire.open_reply(data, openids[user])
        except ValueError as e:
            error(f"reply: {str(e)[:60]}")
            continue
        replies += 1
        if measure_from <= t1 <= measure_to:
            completed_in_window += 1
        if measure_from <= t0 < measure_to:
            latencies.append(t1 - t0)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    result: dict[str, Any] = {"answered": len(records), "valid_replies": replies, "errors": errors,
                              "rps": completed_in_window / spec["seconds"], "p50_ms": pct(0.50),
                              "p90_ms": pct(0.90), "p99_ms": pct(0.99),
                              "max_ms": latencies[-1] * 1000 if latencies else float("nan")}
    if "from" in samples and "to" in samples:
        (w0, c0, s0, (b0, t0_), d0), (w1, c1, s1, (b1, t1_), d1) = samples["from"], samples["to"]
        wall = w1 - w0
        result.update(client_cpu=(c1 - c0) / wall, server_cpu=(s1 - s0) / wall, db_cpu=(d1 - d0) / wall,
                      machine_busy=(b1 - b0) / max(t1_ - t0_, 1),
                      server_us_per_req=(s1 - s0) / completed_in_window * 1e6 if completed_in_window else float("nan"))
    return result


def client_main() -> int:
    spec = json.loads(sys.stdin.read())
    try:
        print(json.dumps(asyncio.run(_load(spec))))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupt)
    sys.exit(client_main())
