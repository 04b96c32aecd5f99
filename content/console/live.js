// Live parts of a console page: an element with an id and data-live="SECONDS" (a campaign being
// sent, a running contest's standings) is fetched again with the page every few seconds and
// replaced in place, until the server's copy of it no longer carries data-live. One mechanism
// for every page; the server renders the same HTML either way.
(function () {
  "use strict";

  function schedule() {
    var live = document.querySelectorAll("[id][data-live]");
    if (!live.length) {
      return;
    }
    var seconds = Math.max(2, parseInt(live[0].getAttribute("data-live"), 10) || 5);
    setTimeout(refresh, seconds * 1000);
  }

  function refresh() {
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        return response.ok ? response.text() : "";
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[id][data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh) {
            el.replaceWith(document.adoptNode(fresh));
          } else {
            el.removeAttribute("data-live"); // signed out, or gone: stop asking
          }
        });
        schedule();
      })
      .catch(schedule);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", schedule);
  } else {
    schedule();
  }
})();
