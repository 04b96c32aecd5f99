// The share page's script (content/share_pages.py): WeChat's share card through the JS-SDK, from
// the page's JSON elements (the CSP allows no inline script). Outside WeChat `wx` may be missing.
(function () {
  'use strict';
  function data(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  var config = data('wx-config');
  var card = data('wx-share');
  if (!config || !card || !window.wx) { return; }
  wx.config(config);
  wx.ready(function () {
    wx.updateAppMessageShareData({title: card.title, desc: card.desc, link: card.link, imgUrl: card.imgUrl});
    wx.updateTimelineShareData({title: card.title, link: card.link, imgUrl: card.imgUrl});
  });
})();
