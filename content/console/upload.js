// The 内容 page's upload with a progress bar. Without this script the form posts as it is; with
// it, the same form goes by XMLHttpRequest (upload progress), and the page the server answers
// (the versions with the result, or the pack's problems) replaces this one.
(function () {
  "use strict";

  function show(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    document.title = doc.title;
    document.body.replaceWith(document.adoptNode(doc.body));
    bind();
  }

  function bind() {
    var form = document.getElementById("upload-form");
    if (!form || !window.FormData) {
      return;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = document.getElementById("upload-status");
      var bar = document.getElementById("upload-progress");
      var percent = document.getElementById("upload-percent");
      var button = form.querySelector("button[type=submit]");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          bar.value = Math.round((e.loaded * 100) / e.total);
          percent.textContent = bar.value + "%";
        }
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        percent.textContent = "已上传，正在检查……";
      });
      xhr.addEventListener("load", function () {
        show(xhr.responseText);
      });
      xhr.addEventListener("error", function () {
        percent.textContent = "上传失败：连接中断，请重试。";
        button.disabled = false;
      });
      status.hidden = false;
      button.disabled = true;
      xhr.send(new FormData(form));
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", bind);
  } else {
    bind();
  }
})();
