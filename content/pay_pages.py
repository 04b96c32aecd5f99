"""The claim page of a WeChat Pay transfer (CONTRACT §4.10): opened inside WeChat, it hands the
bill's package to `requestMerchantTransfer` (JS-SDK, signed with the jsapi_ticket). In the sandbox,
where WeixinJSBridge is missing, it shows buttons that play the user's part in the emulator."""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

from content.jssdk import JSSDK, JSSDK_ORIGIN, json_script as _json_script
from content.pages import page

JS_API_LIST = ("requestMerchantTransfer",)


_SCRIPT_BODY = """
(function () {
  var transfer = JSON.parse(document.getElementById('transfer').textContent);
  var sandbox = document.getElementById('sandbox');
  var status = document.getElementById('status');
  function say(text) { status.textContent = text; }
  function invoke() {
    WeixinJSBridge.invoke('requestMerchantTransfer',
      {mchId: transfer.mchId, appId: transfer.appId, package: transfer.package},
      function (res) {
        // ok only means the confirmation was shown: the money moves when WeChat Pay says so.
        if (res.err_msg === 'requestMerchantTransfer:ok') { say('已提交，到账后会在公众号里通知您。'); }
        else { say('没有完成确认，可以再点一次“确认收款”。'); }
      });
  }
  document.getElementById('claim').addEventListener('click', function () {
    if (typeof WeixinJSBridge !== 'undefined') { invoke(); return; }
    say(sandbox ? '这里不是微信：请用下面的沙箱按钮。' : '请在微信里打开这个链接。');
  });
  function start() {
    if (typeof WeixinJSBridge !== 'undefined') { invoke(); }
    else { document.addEventListener('WeixinJSBridgeReady', invoke, false); }
  }
  if (window.wx) {  // inside WeChat: the JS-SDK signed with the jsapi_ticket, then the bridge
    wx.config(JSON.parse(document.getElementById('wx-config').textContent));
    wx.ready(start);
    wx.error(function () { say('微信签名校验失败，请稍后重新打开链接。'); });
  } else { start(); }
  if (!sandbox) { return; }
  if (typeof WeixinJSBridge === 'undefined') {
    sandbox.hidden = false;
    document.getElementById('claim').hidden = true;
  }
  function post(url, body, done) {
    fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})
      .then(function (r) { say(r.ok ? done : '沙箱答复 HTTP ' + r.status); })
      .catch(function (e) { say('沙箱没有答复：' + e); });
  }
  document.getElementById('sandbox-confirm').addEventListener('click', function () {
    post(sandbox.dataset.confirm, {package: transfer.package, openid: sandbox.dataset.openid},
         '已确认收款（沙箱）：到账通知会发到模拟器里。');
  });
  document.getElementById('sandbox-expire').addEventListener('click', function () {
    post(sandbox.dataset.expire, {out_bill_no: sandbox.dataset.bill},
         '已让它过期（沙箱）：重新点开领取链接会生成新的转账。');
  });
})();
"""
_SCRIPT = f"<script>{_SCRIPT_BODY}</script>"
# The page's Content-Security-Policy allows this inline script by its hash, and the JS-SDK's origin.
SCRIPT_SOURCES = ("'sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT_BODY.encode()).digest()).decode() + "'",
                  JSSDK_ORIGIN)


def claim_page(*, amount: str, withdrawal_id: int, wx_config: dict[str, Any], transfer: dict[str, Any],
               sandbox: dict[str, str] | None) -> str:
    """The confirm page. `sandbox`: {"confirm", "expire" (the emulator's URLs), "openid", "bill"}."""
    body = [(f"<p>申请号 {withdrawal_id} 的提现 <b class=\"price\">{html.escape(amount)}</b> 已审核通过，"
             "确认后转入您的微信零钱。</p>"),
            '<p><button id="claim" type="button" style="font-size:18px;padding:10px 24px">确认收款</button></p>',
            '<p id="status" role="status" class="meta"></p>',
            _json_script("wx-config", wx_config), _json_script("transfer", transfer)]
    if sandbox is not None:
        attrs = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in sandbox.items())
        body.append(f'<div id="sandbox" hidden {attrs}><p class="meta">沙箱：这里没有微信，按钮代替您在微信里的操作。</p>'
                    '<button id="sandbox-confirm" type="button">确认收款</button> '
                    '<button id="sandbox-expire" type="button">让它过期</button></div>')
    else:
        body.append(f'<script src="{JSSDK}"></script>')
    body.append(_SCRIPT)
    return page("确认收款", "".join(body), meta="微信支付 · 商家转账")


def notice_page(title: str, text: str, *, link: str = "") -> str:
    """A claim link's answer when there is nothing to confirm (paid, failed, busy, unknown)."""
    extra = f'<p><a href="{html.escape(link)}">重新打开</a></p>' if link else ""
    return page(title, f"<p>{html.escape(text)}</p>{extra}")
