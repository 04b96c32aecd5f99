// The sandbox's stand-in for WeChat's JS-SDK (jweixin-1.6.0.js), loaded by our pages in sandbox
// mode (sandbox/jssdk.py). It reports wx.config and the share calls to the sandbox, which checks
// the signature as WeChat does; wx.ready's callbacks run when it passed, wx.error's when not.
(function () {
  'use strict';
  var recorder = new URL('../sim/jssdk', document.currentScript.src).href;
  var page = location.href.split('#')[0];
  var state = 'new';  // new → checking → ready | failed
  var allowed = [];
  var readyQueue = [];
  var errorQueue = [];
  var failure = null;

  function plain(o) {  // what the page passed, without its callbacks
    var out = {};
    Object.keys(o || {}).forEach(function (k) { if (typeof o[k] !== 'function') { out[k] = o[k]; } });
    return out;
  }
  function report(kind, data, ready) {
    return fetch(recorder, {method: 'POST', headers: {'Content-Type': 'application/json'},
                            body: JSON.stringify({kind: kind, url: page, data: data, ready: ready})})
      .then(function (r) { return r.json(); });
  }
  function share(name) {
    return function (o) {
      o = o || {};
      var ready = state === 'ready' && allowed.indexOf(name) >= 0;
      report(name, plain(o), ready).then(function (answer) {
        if (answer.ok) { if (o.success) { o.success({errMsg: name + ':ok'}); } }
        else if (o.fail) { o.fail({errMsg: name + ':fail'}); }
        if (o.complete) { o.complete(); }
      });
    };
  }

  window.wx = {
    config: function (c) {
      state = 'checking';
      allowed = (c && c.jsApiList) || [];
      report('config', plain(c), false).then(function (answer) {
        state = answer.ok ? 'ready' : 'failed';
        if (answer.ok) { readyQueue.splice(0).forEach(function (fn) { fn(); }); }
        else {
          failure = {errMsg: 'config:invalid signature'};
          errorQueue.splice(0).forEach(function (fn) { fn(failure); });
        }
      });
    },
    ready: function (fn) { if (state === 'ready') { fn(); } else { readyQueue.push(fn); } },
    error: function (fn) { if (state === 'failed') { fn(failure); } else { errorQueue.push(fn); } },
    updateAppMessageShareData: share('updateAppMessageShareData'),
    updateTimelineShareData: share('updateTimelineShareData')
  };
})();
