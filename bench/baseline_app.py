"""The yardstick for bench/webhook.py: the least a WeChat webhook on aiohttp + wechatpy can do.

Verifies the signature, decrypts in safe mode, parses with wechatpy.parse_message, answers a
TextReply echoing the text, encrypts in safe mode. No database, no dedupe, no routing.

    python bench/baseline_app.py --port 8091 --token T [--aes-key 43CHARS --app-id wx...]
"""

from __future__ import annotations

import argparse

from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature


def create_app(token: str, aes_key: str = "", app_id: str = "") -> web.Application:
    crypto = WeChatCrypto(token, aes_key, app_id) if aes_key else None

    async def receive(request: web.Request) -> web.Response:
        q = request.query
        timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
        try:
            check_signature(token, q.get("signature", ""), timestamp, nonce)
        except InvalidSignatureException:
            return web.Response(status=403, text="bad signature")
        body = await request.read()
        if crypto is not None:
            try:
                body = crypto.decrypt_message(body, q.get("msg_signature", ""), timestamp, nonce)
            except Exception:  # bad signature, key or AppID
                return web.Response(status=400, text="cannot decrypt")
        msg = parse_message(body)
        xml = TextReply(message=msg, content=getattr(msg, "content", "") or "ok").render()
        if crypto is not None:
            xml = crypto.encrypt_message(xml, nonce, timestamp)
        return web.Response(text=xml, content_type="application/xml")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/wechat", receive)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--aes-key", default="")
    p.add_argument("--app-id", default="")
    args = p.parse_args()
    web.run_app(create_app(args.token, args.aes_key, args.app_id), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
