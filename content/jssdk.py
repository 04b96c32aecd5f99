"""WeChat's JS-SDK on our public pages (the claim page, the share page): the script to load, the
`wx.config` a page passes it (signed with the jsapi_ticket over the page's own URL), and data
handed to a page's static script in a JSON element (CSP: no inline script)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from typing import Any

JSSDK = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js"
JSSDK_ORIGIN = "https://res.wx.qq.com"
# In sandbox mode the sandbox (mounted at /sandbox) serves a stand-in that records what a page
# passes to wx.config and the share APIs, and checks the signature as WeChat would.
SANDBOX_JSSDK = "/sandbox/static/jweixin.js"


def jssdk_source(sandbox: bool) -> str:
    return SANDBOX_JSSDK if sandbox else JSSDK


def jsapi_signature(ticket: str, nonce: str, timestamp: int, url: str) -> str:
    """wx.config's signature: sha1 of jsapi_ticket=…&noncestr=…&timestamp=…&url=… (the page's URL
    without its #fragment)."""
    plain = f"jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url.split('#', 1)[0]}"
    return hashlib.sha1(plain.encode()).hexdigest()


def wx_config(app_id: str, ticket: str, timestamp: int, url: str, apis: Iterable[str]) -> dict[str, Any]:
    """What a page passes to wx.config to use `apis` at `url` (a fresh nonce each time)."""
    nonce = secrets.token_hex(8)
    return {"appId": app_id, "timestamp": timestamp, "nonceStr": nonce,
            "signature": jsapi_signature(ticket, nonce, timestamp, url), "jsApiList": list(apis)}


def json_script(element_id: str, value: Any) -> str:
    """A value for a page's script, as a JSON element its script reads (never run)."""
    # "<", ">" and "&" as \\u escapes: the JSON can never close the script element.
    text = json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'
