// The sandbox chat simulator. Talks only to the simulator's JSON under sim/ (relative URLs, so the
// page works wherever /sandbox/ is mounted); the simulated WeChat posts to the bot's webhook.
"use strict";

const POLL_MS = 1000;        // late customer-service and template messages show up within a second
const STATE_MS = 3000;       // users' follow status and the menu (pushed by the app after start)
const TIME_GAP_S = 5 * 60;   // a time line between messages more than five minutes apart
const STORE_KEY = "distbot.sandbox.openid";

const $ = (id) => document.getElementById(id);
const state = {
  users: [], usersSig: "", menu: null, menuSig: "", keyNames: {},
  openid: localStorage.getItem(STORE_KEY) || "",
  gen: 0, lastId: 0, lastAt: 0, polling: null, pending: 0,
  queue: Promise.resolve(), scanMedia: "",
};

// ---- helpers ------------------------------------------------------------------------------------
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (_) { data = null; }
  if (!resp.ok) throw new Error((data && data.error) || `请求失败（HTTP ${resp.status}）`);
  return data;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

// Text with its links clickable, built as DOM nodes (never innerHTML: replies are untrusted text).
function linkified(text) {
  const frag = document.createDocumentFragment();
  const re = /https?:\/\/[^\s，。！？、；）)"'<>]+/g;
  let last = 0, m;
  while ((m = re.exec(text)) !== null) {
    frag.append(text.slice(last, m.index));
    frag.append(el("a", { href: m[0], target: "_blank", rel: "noopener", text: m[0] }));
    last = m.index + m[0].length;
  }
  frag.append(text.slice(last));
  return frag;
}

let toastTimer = 0;
function toast(message) {
  const t = $("toast");
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
}

function currentUser() {
  return state.users.find((u) => u.openid === state.openid) || null;
}

function pad(n) { return String(n).padStart(2, "0"); }
function clock(at) {
  const d = new Date(at * 1000), now = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === now.toDateString() ? hm : `${d.getMonth() + 1}月${d.getDate()}日 ${hm}`;
}

// Actions run one after another, so messages reach the bot in the order they were typed.
function enqueue(job) {
  const run = state.queue.then(job, job);
  state.queue = run.catch(() => {});
  return run;
}

function setPending(delta) {
  state.pending += delta;
  $("typing").hidden = state.pending <= 0;
}

// ---- users and follow state -----------------------------------------------------------------
async function refreshState() {
  let data;
  try { data = await api("GET", "sim/state"); } catch (_) { return; }
  state.users = data.users || [];
  // The quota counts down every second: it is shown apart, without rebuilding the user list.
  const usersSig = JSON.stringify(state.users.map(({ quota, ...u }) => u));
  if (usersSig !== state.usersSig) {
    state.usersSig = usersSig;
    if (state.openid && !currentUser()) selectUser("");  // the server restarted: its users are gone
    renderUsers();
  }
  renderQuota();
  const menuSig = JSON.stringify(data.menu);
  if (menuSig !== state.menuSig) {
    state.menuSig = menuSig;
    state.menu = data.menu;
    renderMenu();
  }
}

function renderUsers() {
  const select = $("user-select");
  select.replaceChildren();
  if (!state.users.length) select.append(el("option", { value: "", text: "（还没有用户）" }));
  else if (!state.openid) select.append(el("option", { value: "", text: "请选择…" }));
  for (const u of state.users) {
    select.append(el("option", { value: u.openid, text: `${u.nickname}（${u.subscribed ? "已关注" : "未关注"}）` }));
  }
  select.value = state.openid;
  renderStatus();
}

function renderStatus() {
  const u = currentUser();
  const pill = $("follow-status");
  pill.className = "pill" + (u ? (u.subscribed ? " on" : " off") : "");
  pill.textContent = u ? (u.subscribed ? "已关注" : "未关注") : "未选用户";
  $("follow").hidden = !!(u && u.subscribed);
  $("unfollow").hidden = !(u && u.subscribed);
  $("follow-scene").textContent = u && u.subscribed ? "扫码 / 推广码" : "扫码 / 推广码关注";
  for (const id of ["follow", "follow-scene", "unfollow", "age"]) $(id).disabled = !u;
  $("title-text").textContent = u ? `分销员助手 · ${u.nickname}` : "分销员助手";
  renderQuota();
}

// WeChat's customer-service quota for the current user: what the bot may still push.
function renderQuota() {
  const u = currentUser();
  const q = u && u.quota;
  const pill = $("quota");
  pill.hidden = !q;
  if (!q) return;
  const left = q.seconds >= 3600 ? `${Math.floor(q.seconds / 3600)} 小时` : `${q.seconds} 秒`;
  pill.textContent = q.seconds ? `客服消息剩 ${q.left} 条 · ${left}` : "客服消息窗口已关闭";
  pill.className = "pill" + (q.seconds && q.left ? " on" : " off");
}

function selectUser(openid) {
  state.openid = openid;
  state.gen += 1;
  state.lastId = 0;
  state.lastAt = 0;
  state.polling = null;
  if (openid) localStorage.setItem(STORE_KEY, openid); else localStorage.removeItem(STORE_KEY);
  $("timeline").replaceChildren();
  $("empty").hidden = false;
  $("user-select").value = openid;
  renderStatus();
  if (openid) pollMessages();
}

async function newUser() {
  const user = await api("POST", "sim/users", {});
  await refreshState();
  selectUser(user.openid);
  return user;
}

// ---- sending ------------------------------------------------------------------------------------
function simSend(payload, path = "sim/send") {
  const openid = state.openid;
  if (!openid) { toast("先选择或新建一个模拟用户"); return Promise.resolve(null); }
  return enqueue(async () => {
    setPending(1);
    const early = setTimeout(pollMessages, 120);  // the user's own message shows before the reply
    try {
      return await api("POST", path, { openid, ...payload });
    } catch (e) {
      toast(e.message);
      return null;
    } finally {
      clearTimeout(early);
      setPending(-1);
      pollMessages();
      refreshState();
    }
  });
}

function sendText() {
  const input = $("text");
  const content = input.value.trim();
  if (!content) return;
  if (!state.openid) { toast("先选择或新建一个模拟用户"); return; }
  input.value = "";
  simSend({ type: "text", content });
}

// ---- the menu -----------------------------------------------------------------------------------
function renderMenu() {
  const bar = $("menu");
  closeSubmenu();
  bar.replaceChildren();
  state.keyNames = {};
  const buttons = (state.menu && state.menu.button) || [];
  if (!buttons.length) {
    bar.append(el("span", { class: "muted", text: "菜单尚未创建（应用启动后会通过 menu/create 推送）" }));
    return;
  }
  for (const top of buttons) {
    const subs = top.sub_button || [];
    for (const s of subs) if (s.key) state.keyNames[s.key] = s.name;
    if (top.key) state.keyNames[top.key] = top.name;
    const btn = el("button", { type: "button", class: "top", dataset: { testid: "menu-top" } },
      subs.length ? el("span", { class: "icon", text: "☰" }) : null, top.name);
    btn.addEventListener("click", (ev) => {
      ev.stopPropagation();
      if (subs.length) toggleSubmenu(btn, subs); else pressButton(top);
    });
    bar.append(btn);
  }
}

function pressButton(b) {
  closeSubmenu();
  if (b.type === "click" && b.key) simSend({ type: "click", key: b.key });
  else if (b.url) window.open(b.url, "_blank", "noopener");
  else toast(`沙盒暂不支持这种菜单类型：${b.type || "未知"}`);
}

function toggleSubmenu(btn, subs) {
  const menu = $("submenu");
  if (!menu.hidden && menu.dataset.owner === btn.textContent) { closeSubmenu(); return; }
  closeSubmenu();
  menu.replaceChildren(...subs.map((s) => el("button", {
    type: "button", dataset: { testid: "menu-sub", key: s.key || "" }, text: s.name,
    onclick: (ev) => { ev.stopPropagation(); pressButton(s); },
  })));
  menu.dataset.owner = btn.textContent;
  menu.hidden = false;
  btn.classList.add("open");
  const phone = $("phone").getBoundingClientRect(), r = btn.getBoundingClientRect();
  const width = Math.max(menu.offsetWidth, r.width - 12);
  menu.style.minWidth = `${r.width - 12}px`;
  let left = r.left - phone.left + r.width / 2 - width / 2;
  left = Math.max(6, Math.min(left, phone.width - width - 6));
  menu.style.left = `${left}px`;
  menu.style.bottom = `${phone.bottom - r.top + 6}px`;
}

function closeSubmenu() {
  $("submenu").hidden = true;
  for (const b of document.querySelectorAll(".menubar .top.open")) b.classList.remove("open");
}

// ---- the timeline -------------------------------------------------------------------------------
async function pollMessages() {
  if (!state.openid || state.polling) return;
  const gen = state.gen, openid = state.openid;
  const run = (async () => {
    try {
      const data = await api("GET", `sim/messages?openid=${encodeURIComponent(openid)}&after=${state.lastId}`);
      if (gen !== state.gen) return;  // another user was picked meanwhile
      for (const m of data.messages || []) {
        if (m.id <= state.lastId) continue;
        state.lastId = m.id;
        appendItem(m);
      }
    } catch (_) { /* the server may be restarting; the next poll tries again */ }
  })();
  state.polling = run;
  await run;
  if (state.polling === run) state.polling = null;
}

function nearBottom() {
  const c = $("chat");
  return c.scrollHeight - c.scrollTop - c.clientHeight < 120;
}

function scrollDown() {
  const c = $("chat");
  c.scrollTop = c.scrollHeight;
}

function appendNode(node, force) {
  const stick = force || nearBottom();
  $("empty").hidden = true;
  $("timeline").append(node);
  if (stick) scrollDown();
}

function notice(text, warn) {
  appendNode(el("div", { class: "notice" + (warn ? " warn" : "") }, el("span", { text })), true);
}

const VIA = { passive: "被动回复", custom: "客服消息", template: "模板消息", mass: "群发" };

function appendItem(m) {
  if (m.at && m.at - state.lastAt > TIME_GAP_S) appendNode(el("div", { class: "time", text: clock(m.at) }));
  if (m.at) state.lastAt = m.at;
  const fromUser = m.from === "user";
  const u = currentUser();
  const avatar = el("div", { class: "avatar", text: fromUser ? "我" : "分", title: fromUser ? (u && u.nickname) || "" : "公众号" });
  const stack = el("div", { class: "stack" }, ...(fromUser ? userContent(m) : botContent(m)));
  if (!fromUser && VIA[m.via]) stack.append(el("div", { class: "via", text: VIA[m.via] }));
  const row = el("div", { class: `msg ${fromUser ? "user" : "bot"}`, dataset: { id: m.id, type: m.type, via: m.via } },
    avatar, stack);
  appendNode(row, fromUser);
}

function userContent(m) {
  if (m.type === "text") return [el("div", { class: "bubble", text: m.content })];
  let text, detail;
  if (m.type === "click") {
    text = `点击菜单「${state.keyNames[m.key] || m.key}」`;
    detail = `CLICK · ${m.key}`;
  } else if (m.event === "subscribe") {
    text = m.scene ? "扫码关注了公众号" : "关注了公众号";
    detail = m.scene ? `subscribe · qrscene_${m.scene}` : "subscribe";
  } else if (m.event === "scan") {
    text = "扫码（已关注）";
    detail = `SCAN · ${m.scene}`;
  } else if (m.event === "unsubscribe") {
    text = "取消关注了公众号";
    detail = "unsubscribe";
  } else {
    text = `[${m.type}]`;
  }
  return [el("div", { class: "bubble event" }, text, detail ? el("small", { text: detail }) : null)];
}

function botContent(m) {
  if (m.type === "text") return [el("div", { class: "bubble" }, linkified(m.content || ""))];
  if (m.type === "image") {
    const src = `media/${encodeURIComponent(m.media_id)}`;
    const img = el("img", { src, alt: "图片消息", loading: "lazy" });
    img.addEventListener("load", () => { if (nearBottom()) scrollDown(); });
    img.addEventListener("click", () => window.open(src, "_blank", "noopener"));
    const scan = el("button", { type: "button", class: "scan-btn", dataset: { testid: "scan-image" },
      text: "扫码关注", title: "识别图中二维码，让一个模拟用户扫码关注" });
    scan.addEventListener("click", () => openPicker(m.media_id));
    return [el("div", { class: "bubble image" }, img), scan];
  }
  if (m.type === "news") return [newsCard(m.articles || [])];
  if (m.type === "mpnews") {  // a 群发 article: its cover is uploaded media, its digest the description
    return [newsCard((m.articles || []).map((a) => ({ title: a.title, description: a.digest,
      picurl: a.thumb_media_id ? `media/${encodeURIComponent(a.thumb_media_id)}` : "" })))];
  }
  if (m.type === "template") return [templateCard(m)];
  return [el("div", { class: "bubble", text: `[${m.type} 消息]` })];
}

function newsCard(articles) {
  const card = el("div", { class: "card news" });
  for (const a of articles) {
    const art = el("div", { class: "article" });
    if (a.picurl) {
      const img = el("img", { class: "cover", src: a.picurl, alt: "" });
      img.addEventListener("error", () => img.remove());
      art.append(img);
    }
    art.append(el("h3", { text: a.title || "（无标题）" }));
    if (a.description) art.append(el("div", { class: "desc", text: a.description }));
    if (a.url) art.append(el("a", { class: "more", href: a.url, target: "_blank", rel: "noopener", text: "阅读全文 ›" }));
    card.append(art);
  }
  return card;
}

function templateCard(m) {
  const data = m.data || {};
  const value = (k) => (data[k] && typeof data[k] === "object" ? String(data[k].value ?? "") : String(data[k] ?? ""));
  const card = el("div", { class: "card template", dataset: { testid: "template-card" } },
    el("div", { class: "head", text: `模板消息 · ${m.template_id}` }));
  if (data.first) card.append(el("div", { class: "first", text: value("first") }));
  const dl = el("dl");
  for (const k of Object.keys(data)) {
    if (k === "first" || k === "remark") continue;
    dl.append(el("div", { class: "kv" }, el("dt", { text: k }), el("dd", { text: value(k) })));
  }
  if (dl.childElementCount) card.append(dl);
  if (data.remark) card.append(el("div", { class: "remark", text: value("remark") }));
  if (m.url) card.append(el("a", { class: "more", href: m.url, target: "_blank", rel: "noopener", text: "详情 ›" }));
  return card;
}

// ---- dialogs ------------------------------------------------------------------------------------
function openDialog(id) { $(id).hidden = false; }
function closeDialogs() { for (const d of document.querySelectorAll(".sheet")) d.hidden = true; }

function openSceneDialog() {
  if (!state.openid) { toast("先选择或新建一个模拟用户"); return; }
  $("scene-input").value = "";
  $("qr-input").value = "";
  openDialog("scene-dialog");
  $("scene-input").focus();
}

function submitScene(ev) {
  ev.preventDefault();
  const scene = $("scene-input").value.trim(), qr = $("qr-input").value.trim();
  if (!scene && !qr) { toast("请填写推广码，或粘贴二维码链接"); return; }
  closeDialogs();
  simSend(qr ? { type: "subscribe", qr } : { type: "subscribe", scene });
}

function openPicker(mediaId) {
  state.scanMedia = mediaId;
  const list = $("picker-list");
  list.replaceChildren(...state.users.map((u) => el("button", {
    type: "button", dataset: { testid: "picker-user", openid: u.openid },
    onclick: () => scanWith(u.openid),
  }, el("span", { text: u.nickname + (u.openid === state.openid ? "（当前）" : "") }),
     el("span", { class: "muted", text: u.subscribed ? "已关注" : "未关注" }))));
  openDialog("picker-dialog");
}

async function scanWith(openid) {
  closeDialogs();
  const mediaId = state.scanMedia;
  if (openid !== state.openid) selectUser(openid);
  const answer = await simSend({ media_id: mediaId }, "sim/scan");
  if (answer && answer.scene) toast(`已识别二维码，场景：${answer.scene}`);
}

// ---- wiring -------------------------------------------------------------------------------------
function wire() {
  $("user-select").addEventListener("change", (ev) => selectUser(ev.target.value));
  $("new-user").addEventListener("click", () => newUser().catch((e) => toast(e.message)));
  $("follow").addEventListener("click", () => simSend({ type: "subscribe" }));
  $("unfollow").addEventListener("click", () => simSend({ type: "unsubscribe" }));
  $("follow-scene").addEventListener("click", openSceneDialog);
  $("scene-form").addEventListener("submit", submitScene);
  $("age").addEventListener("click", async () => {
    if (!state.openid) return;
    try {
      await api("POST", "sim/age", { openid: state.openid, hours: 49 });
      notice("已把该用户最后一次互动拨回 49 小时前：48 小时窗口已关闭，客服消息会被拒绝（45015），" +
             "机器人应改发模板消息。用户再发一条消息即重新打开窗口。", true);
    } catch (e) { toast(e.message); }
  });
  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); sendText(); });
  $("picker-new").addEventListener("click", async () => {
    try { const u = await newUser(); await scanWith(u.openid); } catch (e) { toast(e.message); }
  });
  for (const b of document.querySelectorAll("[data-close]")) b.addEventListener("click", closeDialogs);
  for (const d of document.querySelectorAll(".sheet")) {
    d.addEventListener("click", (ev) => { if (ev.target === d) closeDialogs(); });
  }
  document.addEventListener("click", (ev) => { if (!$("submenu").contains(ev.target)) closeSubmenu(); });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { closeDialogs(); closeSubmenu(); } });
  // Keep the newest message in view when the window (or a phone's keyboard) changes the chat's height.
  let stick = true;
  $("chat").addEventListener("scroll", () => { stick = nearBottom(); });
  window.addEventListener("resize", () => { if (stick) scrollDown(); });
}

async function start() {
  wire();
  renderMenu();
  await refreshState();
  const remembered = state.openid;
  selectUser(currentUser() ? remembered : "");
  renderUsers();
  setInterval(pollMessages, POLL_MS);
  setInterval(refreshState, STATE_MS);
}

start();
