// The technician console: reads the agent's snapshot and live events
// (/api/events, server-sent events) and draws them. No framework, no
// build step; every string from the agent goes in as text, never as HTML.
"use strict";
(function () {
  const MAX_ROWS = 200, MAX_FRAMES = 64;
  const $ = (sel) => document.querySelector(sel);
  let lang = pickLang();
  let snap = null, es = null, tokenRequired = false;
  const rowsBySeq = new Map();   // seq -> {tr, state}
  const early = new Map();       // seq -> state that came before its scan
  const taps = new Map();        // "station/device" -> frames, oldest first
  const RANK = { not_accepted: 0, accepted: 1, published: 2, receipted: 3 };

  function pickLang() {
    const saved = localStorage.getItem("scanagent.lang");
    if (saved && window.I18N[saved]) return saved;
    const l = document.documentElement.lang;
    return window.I18N[l] ? l : "en";
  }
  function t(key, vars) {
    let s = (window.I18N[lang] && window.I18N[lang][key]) || window.I18N.en[key] || key;
    if (vars) for (const k in vars) s = s.replace("{" + k + "}", vars[k]);
    return s;
  }
  // h builds an element: h("td", {class: "x"}, "text", child, ...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of kids.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }
  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function bytes(n) {
    if (n === undefined || n === null) return "—";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function dur(s) {
    if (s === undefined || s === null || !isFinite(s)) return "—";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function clock(ts) {
    const d = new Date(ts);
    return isNaN(d) ? "" : d.toLocaleTimeString(lang, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }
  function notice(msg, sticky) {
    const n = $("#notice");
    n.textContent = msg;
    n.hidden = !msg;
    clearTimeout(notice.timer);
    if (msg && !sticky) notice.timer = setTimeout(() => { n.hidden = true; }, 4000);
  }

  // ---- session and login ----
  async function start() {
    $("#lang").value = lang;
    translate();
    let s;
    try {
      s = await (await fetch("/api/session", { cache: "no-store" })).json();
    } catch (e) {
      notice(t("offline"), true);
      setTimeout(start, 2000);
      return;
    }
    tokenRequired = s.token_required;
    $("#logout").hidden = !tokenRequired;
    if (tokenRequired && !s.authorized) showLogin(); else openConsole();
  }
  function showLogin() {
    $("#main").hidden = true;
    $("#login").hidden = false;
    $("#token").focus();
  }
  async function login(ev) {
    ev.preventDefault();
    const body = new URLSearchParams({ token: $("#token").value });
    const r = await fetch("/api/login", { method: "POST", body });
    if (r.ok) {
      $("#token").value = "";
      $("#login-error").textContent = "";
      $("#login").hidden = true;
      openConsole();
    } else {
      $("#login-error").textContent = t("wrong_token");
    }
  }
  async function logout() {
    await fetch("/api/logout", { method: "POST" });
    if (es) es.close();
    es = null;
    showLogin();
  }
  function openConsole() {
    $("#main").hidden = false;
    connect();
  }
  function connect() {
    if (es) es.close();
    es = new EventSource("/api/events");
    es.addEventListener("snapshot", (e) => { notice(""); renderSnapshot(JSON.parse(e.data)); });
    es.addEventListener("scans", (e) => onScans(JSON.parse(e.data)));
    es.addEventListener("tap", (e) => onTap(JSON.parse(e.data)));
    es.onerror = () => {
      notice(t("offline"), true);
      if (es.readyState === EventSource.CLOSED) setTimeout(start, 2000);
    };
  }

  // ---- snapshot: header, stations, buffer, uplink, chart, config ----
  function renderSnapshot(s) {
    snap = s;
    const st = s.status;
    $("#agent").textContent = [st.agent + " @ " + st.site, t("version") + " " + st.version,
      st.uptime ? t("uptime") + " " + st.uptime : "", st.clock ? t("clock") + " " + st.clock : ""].filter(Boolean).join(" · ");
    if (s.log_level && document.activeElement !== $("#loglevel")) $("#loglevel").value = s.log_level;
    $("#loglevel").disabled = !s.log_level;
    $("#reload").disabled = !s.can_reload;
    $("#reload").title = s.can_reload ? "" : t("reload_unavailable");
    renderStations(st.stations || []);
    renderBuffer(s);
    renderChart(s.history || []);
    renderConfig(s.config);
    renderTaps();
    $("#footer").textContent = "/status · /metrics · " + (s.streams || 0) + " console stream(s)";
  }

  function devTile(kind, d, extra) {
    if (!d) return h("div", { class: "dev absent " + kind }, h("div", { class: "name" }, t(kind)), h("div", {}, t("no_scale")));
    const state = d.state || "disconnected";
    // The agent's reason often says what to check already.
    const hint = state === "connected" || /check|проверьте/i.test(d.reason || "") ? "" : t("hint_" + state);
    return h("div", { class: "dev " + kind + " " + state, dataset: { state } },
      h("div", { class: "name" }, t(kind)),
      h("div", { class: "state" }, t(state)),
      h("div", { class: "reason" }, d.port || ""),
      d.reason ? h("div", { class: "reason" }, d.reason) : null,
      hint ? h("div", { class: "hint" }, hint) : null,
      extra);
  }
  function lastFrames(station, device) {
    const fs = (taps.get(station + "/" + device) || []).slice(-3).reverse();
    if (!fs.length) return null;
    return h("div", { class: "frames", dataset: { device } }, fs.map((f) => h("div", { title: f.hex }, t(device) + " " + clock(f.at) + "  " + f.text + " → " + decoded(f))));
  }
  function renderStations(list) {
    const box = $("#stations");
    box.replaceChildren(...list.map((s) => {
      const c = s.counters || {};
      const rej = Object.values(c.rejected || {}).reduce((a, b) => a + b, 0);
      let scaleExtra = null;
      if (s.scale) {
        const w = s.scale.last;
        scaleExtra = h("div", {},
          h("div", { class: "cur-weight" }, w ? w.value + " " + w.unit : "—"),
          w ? h("div", { class: "reason" }, w.stable ? t("stable") : t("motion")) : null,
          h("button", { type: "button", class: "poll", onclick: () => pollScale(s.id) }, t("poll_scale")));
      }
      const wf = s.workflow;
      let wfLine = null;
      if (wf) {
        const parts = [t("workflow") + ": " + wf.name];
        if (wf.operator) parts.push(t("operator") + ": " + wf.operator);
        if (wf.receptacle) {
          const r = wf.receptacle;
          parts.push((r.receptacle ? t("receptacle") + ": " + r.receptacle : t("bag") + ": " + r.bag_session) + " (" + r.items + " " + t("items") + ")");
        }
        wfLine = h("div", { class: "workflow" }, parts.join(" · "));
      }
      return h("article", { class: "station", dataset: { station: s.id } },
        h("h3", {}, s.id), wfLine,
        h("div", { class: "devs" },
          devTile("scanner", s.scanner, null),
          devTile("scale", s.scale, scaleExtra)),
        lastFrames(s.id, "scanner"), s.scale ? lastFrames(s.id, "scale") : null,
        h("div", { class: "counters" }, (c.scans || 0) + " " + t("scans") + " · " + (c.invalid || 0) + " " + t("invalid") + " · " +
          (c.suppressed || 0) + " " + t("suppressed") + " · " + rej + " " + t("rejected")));
    }));
  }
  function facts(el, rows) {
    el.replaceChildren(...rows.filter(Boolean).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }
  function renderBuffer(s) {
    const st = s.status, b = st.buffer || {}, m = st.mqtt || {};
    let eta;
    if (!b.depth) eta = t("nothing_waiting");
    else if (s.drain_eta !== undefined) eta = dur(s.drain_eta);
    else eta = t("not_draining");
    facts($("#buffer"), [
      !st.buffer_error ? null : [t("buffer_closed"), st.buffer_error],
      [t("depth"), String(b.depth || 0)],
      [t("bytes"), bytes(b.bytes || 0)],
      [t("oldest"), b.depth ? dur(b.oldest_age) : "—"],
      [t("free_disk"), b.free_bytes ? bytes(b.free_bytes) : "—"],
      [t("eta"), eta],
    ]);
    const ok = m.state === "connected";
    facts($("#uplink"), [
      [t("uplink"), h("span", { class: "badge " + (ok ? "b-ok" : "b-bad"), id: "uplink-state" }, m.state || "—")],
      [t("broker"), m.broker || "—"],
      m.hint ? [t("hint"), m.hint] : null,
      m.last_error ? [t("last_error"), m.last_error] : null,
      [t("published_n"), String(m.published || 0)],
    ]);
  }
  function renderChart(points) {
    const W = 600, H = 170, L = 40, R = 44, T = 10, B = 22;
    const now = Date.now() / 1000, from = now - 3600;
    const pts = points.filter((p) => p.t >= from);
    const maxS = Math.max(1, ...pts.map((p) => p.scans_per_min));
    const maxB = Math.max(1, ...pts.map((p) => p.backlog));
    const x = (ts) => L + ((ts - from) / 3600) * (W - L - R);
    const y = (v, max) => T + (1 - v / max) * (H - T - B);
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": t("last_hour") });
    root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    for (let m = 0; m <= 60; m += 15) {
      const tx = svg("text", { x: x(from + m * 60), y: H - 6, "text-anchor": "middle" });
      tx.textContent = m === 60 ? "0" : "-" + (60 - m) + "m";
      root.append(tx);
    }
    const lab = (txt, xx, yy, anchor) => { const e = svg("text", { x: xx, y: yy, "text-anchor": anchor }); e.textContent = txt; root.append(e); };
    lab(String(Math.round(maxS)), L - 4, T + 8, "end");
    lab("0", L - 4, H - B, "end");
    lab(String(maxB), W - R + 4, T + 8, "start");
    const line = (cls, f, max) => root.append(svg("polyline", { class: cls, points: pts.map((p) => x(p.t).toFixed(1) + "," + y(f(p), max).toFixed(1)).join(" ") }));
    if (pts.length > 1) {
      line("scans", (p) => p.scans_per_min, maxS);
      line("backlog", (p) => p.backlog, maxB);
    }
    $("#chart").replaceChildren(root, h("div", { class: "legend" },
      h("span", { class: "l-scans" }, "— " + t("scans_per_min")), "  ", h("span", { class: "l-backlog" }, "- - " + t("backlog"))));
  }
  function renderConfig(c) {
    const box = $("#config");
    if (!c) { box.replaceChildren(); return; }
    const head = c.kind === "start" ? t("cfg_start") : c.ok ? t("cfg_reload") : t("cfg_refused");
    const by = c.by ? " " + t("by_" + c.by) : "";
    const list = (title, items, cls) => items && items.length ? [h("div", { class: cls }, title), h("ul", { class: "msgs" }, items.map((e) => h("li", {}, e)))] : [];
    box.replaceChildren(
      h("div", { id: "config-result", class: c.ok ? "" : "error" }, head + by + " · " + clock(c.at) + (c.path ? " · " + c.path : "")),
      ...list(t("cfg_errors"), c.errors, "error"),
      ...list(t("cfg_restart"), c.restart_needed, "warn"),
      ...list(t("cfg_warnings"), c.warnings, "warn"));
  }

  // ---- live scans ----
  function badge(cls, text) { return h("span", { class: "badge " + cls }, text); }
  function stateBadge(state) { return badge("b-" + state, t(state)); }
  function onScans(b) {
    const tbody = $("#scans tbody");
    if (b.scans) {
      const frag = document.createDocumentFragment();
      for (const s of b.scans) {
        const w = s.weight ? [s.weight + " ", s.weight_status ? badge(s.weight_status === "ok" ? "b-ok" : "b-warn", t("w_" + s.weight_status)) : null]
          : s.weight_status ? badge("b-warn", t("w_" + s.weight_status)) : "—";
        let state = s.state;
        if (s.seq && early.has(s.seq)) { state = early.get(s.seq); early.delete(s.seq); }
        const stCell = h("td", { class: "state" }, stateBadge(state));
        const tr = h("tr", { class: "fresh", dataset: { barcode: s.barcode, seq: s.seq || "" } },
          h("td", {}, clock(s.at)), h("td", {}, s.station), h("td", { class: "code" }, s.barcode),
          h("td", {}, s.kind), h("td", {}, s.valid ? badge("b-ok", t("valid")) : badge("b-bad", s.reason || t("invalid_short"))),
          h("td", { class: "weight" }, w), stCell);
        if (s.error) tr.title = s.error;
        if (s.seq) rowsBySeq.set(s.seq, { tr, cell: stCell, state });
        frag.prepend(tr);
      }
      tbody.prepend(frag);
      while (tbody.rows.length > MAX_ROWS) {
        const last = tbody.rows[tbody.rows.length - 1];
        rowsBySeq.delete(Number(last.dataset.seq));
        last.remove();
      }
    }
    for (const [key, state] of [["published", "published"], ["receipted", "receipted"]]) {
      for (const [a, z] of b[key] || []) setState(a, z, state);
    }
    const d = $("#dropped");
    d.hidden = !b.dropped;
    if (b.dropped) d.textContent = t("dropped", { n: b.dropped });
  }
  function setState(a, z, state) {
    const apply = (seq, row) => {
      if (RANK[state] > RANK[row.state]) { row.state = state; row.cell.replaceChildren(stateBadge(state)); }
    };
    if (z - a > rowsBySeq.size) {
      for (const [seq, row] of rowsBySeq) if (seq >= a && seq <= z) apply(seq, row);
      return;
    }
    for (let seq = a; seq <= z; seq++) {
      const row = rowsBySeq.get(seq);
      if (row) apply(seq, row);
      else if (early.size < 10000 && RANK[state] > RANK[early.get(seq) || "accepted"]) early.set(seq, state);
    }
  }

  // ---- serial tap ----
  function decoded(f) {
    if (f.reject) return "✗ " + f.reject;
    if (f.code) return (f.aim ? f.aim + " " : "") + f.code;
    if (f.weight) return f.weight + (f.stable === false ? " ~" : "");
    return "";
  }
  function onTap(e) {
    const key = e.station + "/" + e.device;
    const fs = (taps.get(key) || []).concat(e.frames);
    taps.set(key, fs.slice(-MAX_FRAMES));
    renderTaps();
    if (snap) renderStations(snap.status.stations || []);
  }
  function renderTaps() {
    const box = $("#taps");
    const keys = [];
    for (const s of (snap && snap.status.stations) || []) {
      keys.push([s.id, "scanner"]);
      if (s.scale) keys.push([s.id, "scale"]);
    }
    box.replaceChildren(...keys.map(([st, dev]) => {
      const fs = (taps.get(st + "/" + dev) || []).slice().reverse();
      return h("div", { class: "tap", dataset: { station: st, device: dev } },
        h("h3", {}, st + " · " + t(dev)),
        fs.length ? h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, t("time")), h("th", {}, t("text")), h("th", {}, t("hex")), h("th", {}, t("decoded")))),
          h("tbody", {}, fs.map((f) => h("tr", {},
            h("td", {}, clock(f.at)), h("td", {}, f.text + (f.truncated ? "…" : "")), h("td", { class: "hex", title: f.hex }, f.hex),
            h("td", {}, f.reject ? badge("b-bad", f.reject) : decoded(f))))))) : h("p", {}, t("frames_none")));
    }));
  }

  // ---- actions ----
  async function pollScale(id) {
    const r = await fetch("/api/stations/" + encodeURIComponent(id) + "/poll-scale", { method: "POST" });
    notice(r.ok ? t("polled") + ": " + id : (await r.text()).trim());
  }
  async function setLevel() {
    const l = $("#loglevel").value;
    const r = await fetch("/loglevel", { method: "PUT", body: l });
    notice(r.ok ? t("level_set", { l }) : (await r.text()).trim());
  }
  async function reload() {
    $("#reload").disabled = true;
    try {
      const r = await fetch("/api/reload", { method: "POST" });
      if (!r.ok) { notice((await r.text()).trim()); return; }
      const res = await r.json();
      renderConfig(res);
      if (snap) snap.config = res;
      notice(res.ok ? t("reloaded") : t("cfg_refused"));
    } finally {
      $("#reload").disabled = !(snap && snap.can_reload);
    }
  }
  function translate() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    document.title = t("title");
    if (snap) renderSnapshot(snap);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    $("#loglevel").addEventListener("change", setLevel);
    $("#reload").addEventListener("click", reload);
    $("#lang").addEventListener("change", () => {
      lang = $("#lang").value;
      localStorage.setItem("scanagent.lang", lang);
      translate();
    });
    start();
  });
})();
