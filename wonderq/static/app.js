// WonderQ status page. Plain JavaScript, no build step, no dependency: it reads the JSON API
// like any client (docs/STATUS.md). The live counters come from GET /v1/events, read with
// fetch() and a streaming body reader (EventSource cannot send an Authorization header);
// when no stream can be held the page polls GET /v1/events?once=1 instead.
//
// Safety: the page's Content-Security-Policy turns on Trusted Types, so nothing here may
// assign HTML strings; every value (queue names, message bodies) goes in as text.
"use strict";

(() => {
  const HISTORY_S = 300; // the charts show the last five minutes
  const STALE_MS = 5000; // no event for this long: the stream is considered dead
  const POLL_MS = 2000; // the fallback's period
  const PEEK_LIMIT = 10;
  const BODY_SHOWN = 2000; // characters of a message body shown in the peek list
  const TOKEN_KEY = "wonderq.token";

  const $ = (id) => document.getElementById(id);

  // ---- formatting ------------------------------------------------------------------------

  function fmtNum(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    const a = Math.abs(n);
    if (a < 1000) return a < 10 && !Number.isInteger(n) ? n.toFixed(1) : String(Math.round(n));
    const units = ["k", "M", "G", "T", "P"];
    let v = n;
    let i = -1;
    while (Math.abs(v) >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return (Math.abs(v) < 100 ? v.toFixed(1) : Math.round(v).toString()) + units[i];
  }
  const fmtRate = (n) => fmtNum(n) + "/s";

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${sec}s`;
    return `${sec}s`;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text; // untouched nodes do not repaint
  }

  // ---- talking to the API ----------------------------------------------------------------

  let token = sessionStorage.getItem(TOKEN_KEY);
  let tokenPrompt = null; // the pending prompt's promise, shared by every 401
  let tokenDeclined = false; // the prompt was cancelled: do not ask again until the button

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  // Asks for a token (a 401 came back, or the Token... button); resolves true once one was
  // entered. Once cancelled, 401s stop asking (the banner says why) until the button is used.
  function askToken(message, force) {
    if (tokenPrompt) return tokenPrompt;
    if (tokenDeclined && !force) return Promise.resolve(false);
    const dialog = $("token-dialog");
    setText($("token-text"), message || "This server asks for a token. It is kept in this tab only (sessionStorage) and sent as an Authorization: Bearer header.");
    $("token-input").value = "";
    tokenPrompt = new Promise((resolve) => {
      const done = (ok) => {
        tokenDeclined = !ok;
        if (!ok) $("token-button").hidden = false;
        $("token-form").onsubmit = null;
        $("token-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        tokenPrompt = null;
        resolve(ok);
      };
      $("token-form").onsubmit = (ev) => {
        ev.preventDefault();
        const value = $("token-input").value.trim();
        if (!value) return;
        token = value;
        sessionStorage.setItem(TOKEN_KEY, token);
        $("token-button").hidden = false;
        done(true);
      };
      $("token-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $("token-input").focus();
    });
    return tokenPrompt;
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // fetch() with the token; a 401 asks for one and retries; errors become ApiError.
  async function api(method, path, body) {
    for (;;) {
      const init = { method, headers: authHeaders(), cache: "no-store" };
      if (body !== undefined) {
        init.body = body;
        if (typeof body !== "string" || method === "PUT") init.headers["Content-Type"] = "application/json";
      }
      const res = await fetch(path, init);
      if (res.status === 401) {
        if (await askToken()) continue;
        throw new ApiError(401, "unauthorized", "a token is needed");
      }
      const text = await res.text();
      let doc = null;
      if (text) {
        try {
          doc = JSON.parse(text);
        } catch (e) {
          doc = null;
        }
      }
      if (!res.ok) {
        const err = (doc && doc.error) || {};
        let message = err.message || `HTTP ${res.status}`;
        if (res.status === 403) message = "Not allowed with this token: " + message;
        throw new ApiError(res.status, err.code || "http_" + res.status, message);
      }
      return doc;
    }
  }

  const qpath = (name) => "/v1/queues/" + encodeURIComponent(name);

  // ---- the live snapshots ----------------------------------------------------------------

  // name -> {t: [], ready: [], leased: [], delayed: [], pub: [], dlv: [], del: []} (seconds,
  // and the series of the charts), plus "*" for all queues together.
  const history = new Map();
  let last = null; // the previous snapshot: {t, rows: Map(name -> row object)}
  let current = null; // the latest: {snapshot, rows: Map(name -> row with rates)}
  let lastEventAt = 0;

  function rowObjects(snap) {
    const cols = snap.columns;
    const rows = new Map();
    for (const r of snap.queues) {
      const o = {};
      for (let i = 0; i < cols.length; i++) o[cols[i]] = r[i];
      rows.set(o.name, o);
    }
    return rows;
  }

  function rate(now, before, key, dt) {
    if (!before || dt <= 0) return null;
    const d = now[key] - before[key];
    return d >= 0 ? (d * 1000) / dt : null; // a counter that went down: the queue was recreated
  }

  function push(name, tSec, r) {
    let h = history.get(name);
    if (!h) {
      h = { t: [], ready: [], leased: [], delayed: [], pub: [], dlv: [], del: [] };
      history.set(name, h);
    }
    h.t.push(tSec);
    for (const k of ["ready", "leased", "delayed", "pub", "dlv", "del"]) h[k].push(r[k]);
    while (h.t.length && h.t[0] < tSec - HISTORY_S) {
      for (const k in h) h[k].shift();
    }
  }

  function onSnapshot(snap) {
    lastEventAt = Date.now();
    const rows = rowObjects(snap);
    const dt = last ? snap.t - last.t : 0;
    const tSec = snap.t / 1000;
    const total = { ready: 0, leased: 0, delayed: 0, pub: null, dlv: null, del: null };
    for (const [name, r] of rows) {
      const b = last && last.rows.get(name);
      r.pub = rate(r, b, "published", dt);
      r.dlv = rate(r, b, "delivered", dt);
      r.del = rate(r, b, "deleted", dt);
      total.ready += r.ready;
      total.leased += r.leased;
      total.delayed += r.delayed;
      for (const k of ["pub", "dlv", "del"]) {
        if (r[k] !== null) total[k] = (total[k] || 0) + r[k];
      }
      push(name, tSec, r);
    }
    push("*", tSec, total);
    for (const name of history.keys()) {
      if (name !== "*" && !rows.has(name)) history.delete(name);
    }
    last = { t: snap.t, rows };
    current = { snap, rows, total };
    render();
  }

  // ---- connection: stream, else poll ------------------------------------------------------

  let mode = "connecting"; // "live" (stream), "polling", "down" (no answer), "refused" (4xx)
  let streamAbort = null;
  let restartStream = false; // the stream was stopped on purpose (a new token): reopen at once

  const STATE_TEXT = { live: "live", polling: "polling", down: "unreachable", refused: "refused", connecting: "connecting" };

  // The header's state, and the banner when the counters cannot be had: "down" (no answer)
  // or "refused" (the server answered with an error; ``detail`` says what).
  function setMode(m, detail) {
    mode = m;
    const state = $("f-state");
    state.dataset.state = m === "refused" ? "down" : m;
    setText(state, STATE_TEXT[m]);
    const banner = $("banner");
    const since = lastEventAt ? new Date(lastEventAt).toLocaleTimeString() : "never";
    if (m === "down") {
      setText(banner, `The server is unreachable. Retrying; the numbers below are from ${since}.`);
    } else if (m === "refused") {
      setText(banner, `${detail} The numbers below are from ${since}.`);
    }
    banner.hidden = m !== "down" && m !== "refused";
  }

  function handleEventBlock(block) {
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("data:")) data += line.slice(line[5] === " " ? 6 : 5);
    }
    if (data) onSnapshot(JSON.parse(data));
  }

  // Reads the stream until it ends or fails; resolves "ended", rejects on failure.
  async function stream() {
    const ctrl = new AbortController();
    streamAbort = ctrl;
    const res = await fetch("/v1/events", { headers: authHeaders(), cache: "no-store", signal: ctrl.signal });
    if (res.status === 401) {
      ctrl.abort();
      if (!(await askToken())) throw new ApiError(401, "unauthorized", "a token is needed");
      return "retry";
    }
    if (!res.ok || !res.body) throw new ApiError(res.status, "http_" + res.status, `HTTP ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    const opened = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - Math.max(lastEventAt, opened) > STALE_MS) ctrl.abort();
    }, 1000);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "ended";
        buf += value.replace(/\r\n?/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          handleEventBlock(block);
          if (mode !== "live") setMode("live");
        }
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  async function pollOnce() {
    const snap = await api("GET", "/v1/events?once=1");
    onSnapshot(snap);
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // Stream while the server lets us; when the stream fails, poll for a while (the page
  // keeps updating), then try the stream again. A new token (restartStream) tries the stream
  // again at once.
  async function connect() {
    for (;;) {
      restartStream = false;
      try {
        const how = await stream();
        if (how === "retry") continue;
      } catch (e) {
        // fall through to polling
      }
      if (restartStream) continue;
      const until = Date.now() + 15000;
      while (Date.now() < until && !restartStream) {
        try {
          await pollOnce();
          setMode("polling");
        } catch (e) {
          if (!(e instanceof ApiError)) setMode("down");
          else if (e.status === 401) setMode("refused", "This server needs an access token: use the Token… button above.");
          else setMode("refused", `The server refuses the live counters: ${e.message}.`);
        }
        await sleep(POLL_MS);
      }
    }
  }

  // ---- charts: a small line chart on a canvas ------------------------------------------------
  // Drawn here rather than with a library: the page needs two small line charts, which take
  // about a hundred lines; the smallest maintained library (uPlot) is ~50 KB minified.

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart(canvas, h, keys, colors, fmt) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const ht = canvas.clientHeight;
    if (!w || !ht) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(ht * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(ht * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, ht);
    const muted = cssVar("--muted");
    const line = cssVar("--line");
    ctx.font = "11px system-ui, sans-serif";
    const left = 44;
    const right = 6;
    const top = 6;
    const bottom = 16;
    const pw = w - left - right;
    const ph = ht - top - bottom;
    let max = 0;
    if (h) for (const k of keys) for (const v of h[k]) if (v !== null && v > max) max = v;
    max = niceMax(max);
    // Grid and y labels.
    ctx.strokeStyle = line;
    ctx.fillStyle = muted;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 2; i++) {
      const y = Math.round(top + ph - (ph * i) / 2) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(w - right, y);
      ctx.stroke();
      ctx.fillText(fmt((max * i) / 2), left - 4, y);
    }
    // X labels: minutes ago.
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    for (let m = 0; m <= 5; m++) {
      const x = left + pw - (pw * m * 60) / HISTORY_S;
      ctx.fillText(m === 0 ? "now" : `-${m}m`, Math.min(Math.max(x, left + 10), w - right - 10), ht - 3);
    }
    if (!h || h.t.length === 0) return;
    const tEnd = h.t[h.t.length - 1];
    const xOf = (t) => left + pw - ((tEnd - t) / HISTORY_S) * pw;
    const yOf = (v) => top + ph - (v / max) * ph;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    keys.forEach((k, j) => {
      ctx.strokeStyle = cssVar(colors[j]);
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < h.t.length; i++) {
        const v = h[k][i];
        if (v === null) {
          pen = false;
          continue;
        }
        const x = xOf(h.t[i]);
        const y = yOf(v);
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
      }
      ctx.stroke();
    });
  }

  // A legend whose values update in place (fixed-width outputs: nothing jumps).
  function legend(ul, items) {
    if (ul.childElementCount !== items.length) {
      ul.replaceChildren();
      items.forEach(([label, cls]) => {
        const li = document.createElement("li");
        const sw = document.createElement("span");
        sw.className = "swatch " + cls;
        const name = document.createElement("span");
        name.textContent = label;
        const out = document.createElement("output");
        li.append(sw, name, out);
        ul.append(li);
      });
    }
    items.forEach(([, , value], i) => setText(ul.children[i].querySelector("output"), value));
  }

  const DEPTH_KEYS = ["ready", "leased", "delayed"];
  const RATE_KEYS = ["pub", "dlv", "del"];
  const COLORS = ["--c1", "--c2", "--c3"];

  function drawPair(prefix, h, r) {
    const depthCanvas = $(prefix + "chart-depth");
    const ratesCanvas = $(prefix + "chart-rates");
    drawChart(depthCanvas, h, DEPTH_KEYS, COLORS, fmtNum);
    drawChart(ratesCanvas, h, RATE_KEYS, COLORS, fmtRate);
    const v = r || {};
    legend($(prefix + "legend-depth"), [
      ["ready", "s1", fmtNum(v.ready)],
      ["leased", "s2", fmtNum(v.leased)],
      ["delayed", "s3", fmtNum(v.delayed)],
    ]);
    legend($(prefix + "legend-rates"), [
      ["publish", "s1", fmtRate(v.pub)],
      ["deliver", "s2", fmtRate(v.dlv)],
      ["delete", "s3", fmtRate(v.del)],
    ]);
    depthCanvas.setAttribute("aria-label", `ready ${fmtNum(v.ready)}, leased ${fmtNum(v.leased)}, delayed ${fmtNum(v.delayed)}`);
    ratesCanvas.setAttribute("aria-label", `publish ${fmtRate(v.pub)}, deliver ${fmtRate(v.dlv)}, delete ${fmtRate(v.del)}`);
  }

  // ---- the overview ------------------------------------------------------------------------

  const rowEls = new Map(); // queue name -> <tr>
  let sortKey = "name";
  let sortDir = 1;
  let filterText = "";
  let shownOrder = "";
  const CELLS = ["ready", "leased", "delayed", "pub", "dlv", "del", "oldest"];

  function makeRow(name) {
    const tr = document.createElement("tr");
    tr.dataset.queue = name;
    const td = document.createElement("td");
    td.className = "name";
    const a = document.createElement("a");
    a.href = "#/queue/" + encodeURIComponent(name);
    a.textContent = name;
    a.title = name;
    td.append(a);
    tr.append(td);
    for (const key of CELLS) {
      const c = document.createElement("td");
      c.className = "num" + (key === "delayed" || key === "dlv" || key === "oldest" ? " opt" : "");
      c.dataset.key = key;
      if (key === "oldest") c.hidden = true;
      tr.append(c);
    }
    return tr;
  }

  function sortValue(r, key) {
    const v = r[key];
    return v === null || v === undefined ? -1 : v;
  }

  function renderOverview() {
    const snap = current.snap;
    const rows = current.rows;
    const hasOldest = snap.columns.includes("oldest_age_ms");
    document.querySelectorAll('[data-key="oldest"]').forEach((el) => (el.hidden = !hasOldest));
    for (const [name, tr] of rowEls) {
      if (!rows.has(name)) {
        tr.remove();
        rowEls.delete(name);
      }
    }
    const tbody = $("queue-rows");
    const names = [];
    for (const [name, r] of rows) {
      let tr = rowEls.get(name);
      if (!tr) {
        tr = makeRow(name);
        rowEls.set(name, tr);
      }
      const cells = tr.children;
      setText(cells[1], fmtNum(r.ready));
      setText(cells[2], fmtNum(r.leased));
      setText(cells[3], fmtNum(r.delayed));
      setText(cells[4], fmtRate(r.pub));
      setText(cells[5], fmtRate(r.dlv));
      setText(cells[6], fmtRate(r.del));
      if (hasOldest) {
        cells[7].hidden = false;
        setText(cells[7], r.oldest_age_ms === null ? "–" : fmtDuration(r.oldest_age_ms / 1000));
      }
      const show = !filterText || name.toLowerCase().includes(filterText);
      if (tr.hidden === show) tr.hidden = !show;
      if (show) names.push(name);
    }
    names.sort((a, b) => {
      if (sortKey === "name") return sortDir * (a < b ? -1 : a > b ? 1 : 0);
      const d = sortValue(rows.get(a), sortKey) - sortValue(rows.get(b), sortKey);
      return d ? sortDir * d : a < b ? -1 : 1;
    });
    const order = names.join("\n");
    if (order !== shownOrder || tbody.childElementCount !== rowEls.size) {
      // Reorder only when the order changed: rows are moved, never rebuilt.
      const frag = document.createDocumentFragment();
      for (const name of names) frag.append(rowEls.get(name));
      for (const [name, tr] of rowEls) if (tr.hidden) frag.append(tr);
      tbody.append(frag);
      shownOrder = order;
    }
    $("no-queues").hidden = names.length > 0;
    setText($("shown"), names.length === rows.size ? `${rows.size} queues` : `${names.length} of ${rows.size} queues`);
    drawPair("", history.get("*"), current.total);
    const names2 = $("queue-names");
    if (names2.childElementCount !== rows.size) {
      names2.replaceChildren(...[...rows.keys()].map((n) => {
        const o = document.createElement("option");
        o.value = n;
        return o;
      }));
    }
  }

  function setupOverview() {
    $("filter").addEventListener("input", (ev) => {
      filterText = ev.target.value.trim().toLowerCase();
      if (current) renderOverview();
    });
    document.querySelectorAll("#queues th").forEach((th) => {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.key;
        if (sortKey === key) sortDir = -sortDir;
        else {
          sortKey = key;
          sortDir = key === "name" ? 1 : -1; // numbers: biggest first
        }
        document.querySelectorAll("#queues th").forEach((o) => o.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        shownOrder = "";
        if (current) renderOverview();
      });
    });
    $("create-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = $("create-name").value.trim();
      const note = $("create-note");
      if (!/^[A-Za-z0-9_-]{1,80}$/.test(name)) {
        showNote(note, "A queue name is 1 to 80 characters of A-Z a-z 0-9 _ -", true);
        return;
      }
      try {
        await api("PUT", qpath(name), "{}");
        showNote(note, `Queue ${name} is ready.`, false);
        $("create-name").value = "";
        location.hash = "#/queue/" + encodeURIComponent(name);
      } catch (e) {
        showNote(note, e.message, true);
      }
    });
  }

  function showNote(el, text, isError) {
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.classList.toggle("ok", !isError);
  }

  // ---- a queue's page ----------------------------------------------------------------------

  let openQueue = null; // the name shown, or null on the overview

  function renderQueue() {
    const r = current && current.rows.get(openQueue);
    $("q-gone").hidden = !current || !!r;
    const v = r || {};
    setText($("q-ready"), fmtNum(v.ready));
    setText($("q-leased"), fmtNum(v.leased));
    setText($("q-delayed"), fmtNum(v.delayed));
    setText($("q-pub"), fmtRate(v.pub));
    setText($("q-dlv"), fmtRate(v.dlv));
    setText($("q-del"), fmtRate(v.del));
    setText($("q-expired"), fmtNum(v.expired));
    setText($("q-dead"), fmtNum(v.dead_lettered));
    drawPair("q-", history.get(openQueue), r);
  }

  function queueLink(name) {
    const a = document.createElement("a");
    a.href = "#/queue/" + encodeURIComponent(name);
    a.textContent = name;
    return a;
  }

  async function loadAttributes() {
    const name = openQueue;
    const note = $("attr-note");
    try {
      const info = await api("GET", qpath(name));
      if (name !== openQueue) return;
      const a = info.attributes;
      $("a-visibility").value = a.visibility_timeout;
      $("a-delay").value = a.delay;
      $("a-max-receives").value = a.max_receives === null ? "" : a.max_receives;
      $("a-dlq").value = a.dead_letter_queue === null ? "" : a.dead_letter_queue;
      $("a-max-bytes").value = a.max_message_bytes;
      const to = $("dl-to");
      to.replaceChildren();
      if (a.dead_letter_queue) to.append("Sends its dead letters to ", queueLink(a.dead_letter_queue), ` after ${a.max_receives} receives.`);
      else to.append("Sends no dead letters.");
      showNote(note, "", false);
    } catch (e) {
      if (name === openQueue) showNote(note, e.message, true);
      return;
    }
    try {
      // Every page of the list (1000 queues each): any queue may send here.
      const sources = [];
      let after = null;
      for (let pages = 0; pages < 100; pages++) {
        const list = await api("GET", "/v1/queues" + (after ? "?after=" + encodeURIComponent(after) : ""));
        for (const q of list.queues || []) if (q.attributes.dead_letter_queue === name) sources.push(q.name);
        after = list.next;
        if (!after) break;
      }
      if (name !== openQueue) return;
      const from = $("dl-from");
      from.replaceChildren();
      if (sources.length) {
        from.append("Receives the dead letters of ");
        sources.forEach((s, i) => {
          if (i) from.append(", ");
          from.append(queueLink(s));
        });
        from.append(".");
      } else from.append("Is no queue's dead-letter queue.");
    } catch (e) {
      setText($("dl-from"), "");
    }
  }

  async function peek() {
    const name = openQueue;
    const list = $("peek-list");
    const note = $("peek-note");
    try {
      const doc = await api("GET", qpath(name) + "/peek?limit=" + PEEK_LIMIT);
      if (name !== openQueue) return;
      const items = doc.messages.map((m) => {
        const li = document.createElement("li");
        const meta = document.createElement("div");
        meta.className = "meta";
        meta.textContent = `id ${m.id} · received ${m.receives} time${m.receives === 1 ? "" : "s"}`;
        const pre = document.createElement("pre");
        const body = String(m.body);
        // Text, never markup: a body holding <script> shows as those characters.
        pre.textContent = body.length > BODY_SHOWN ? body.slice(0, BODY_SHOWN) + ` … (${body.length - BODY_SHOWN} more characters)` : body;
        li.append(meta, pre);
        return li;
      });
      list.replaceChildren(...items);
      showNote(note, items.length ? `the next ${items.length} available` : "no message available", false);
    } catch (e) {
      if (name === openQueue) {
        list.replaceChildren();
        showNote(note, e.message, true);
      }
    }
  }

  // A modal question; resolves true for OK. Escape or Cancel answer false.
  function confirmAction(title, text, okLabel) {
    const dialog = $("confirm");
    setText($("confirm-title"), title);
    setText($("confirm-text"), text);
    setText($("confirm-ok"), okLabel);
    return new Promise((resolve) => {
      const done = (ok) => {
        $("confirm-ok").onclick = null;
        $("confirm-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  function numberOrNull(v) {
    v = v.trim();
    return v === "" ? null : Number(v);
  }

  function setupQueuePage() {
    $("peek-refresh").addEventListener("click", peek);
    $("attr-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const note = $("attr-note");
      const body = {
        visibility_timeout: numberOrNull($("a-visibility").value),
        delay: numberOrNull($("a-delay").value),
        max_receives: numberOrNull($("a-max-receives").value),
        dead_letter_queue: $("a-dlq").value.trim() || null,
        max_message_bytes: numberOrNull($("a-max-bytes").value),
      };
      for (const k of ["visibility_timeout", "delay", "max_message_bytes"]) if (body[k] === null) delete body[k];
      try {
        await api("PUT", qpath(openQueue), JSON.stringify(body));
        await loadAttributes();
        showNote(note, "Saved.", false);
      } catch (e) {
        showNote(note, e.message, true);
      }
    });
    $("publish-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const name = openQueue;
      const body = $("publish-body").value;
      const note = $("action-note");
      if (!body) {
        showNote(note, "The message is empty.", true);
        return;
      }
      if (!(await confirmAction("Publish a message?", `Publish this ${body.length}-character message to ${name}? A consumer may receive it.`, "Publish"))) return;
      try {
        const doc = await api("POST", qpath(name) + "/messages", body);
        showNote(note, `Published message ${doc.id}.`, false);
        peek();
      } catch (e) {
        showNote(note, e.message, true);
      }
    });
    $("purge").addEventListener("click", async () => {
      const name = openQueue;
      const r = current && current.rows.get(name);
      const n = r ? r.ready + r.leased + r.delayed : null;
      const note = $("action-note");
      if (!(await confirmAction("Purge the queue?", `Drop ${n === null ? "every" : "all " + n} message${n === 1 ? "" : "s"} of ${name}, leased and delayed ones included? This cannot be undone.`, "Purge"))) return;
      try {
        const doc = await api("POST", qpath(name) + "/purge");
        showNote(note, `Purged ${doc.purged} message${doc.purged === 1 ? "" : "s"}.`, false);
        peek();
      } catch (e) {
        showNote(note, e.message, true);
      }
    });
    $("delete").addEventListener("click", async () => {
      const name = openQueue;
      const note = $("action-note");
      if (!(await confirmAction("Delete the queue?", `Delete ${name} and every message in it? This cannot be undone.`, "Delete"))) return;
      try {
        await api("DELETE", qpath(name));
        location.hash = "#/";
      } catch (e) {
        showNote(note, e.message, true);
      }
    });
  }

  // ---- pages -------------------------------------------------------------------------------

  function route() {
    const m = /^#\/queue\/(.+)$/.exec(location.hash);
    const name = m ? decodeURIComponent(m[1]) : null;
    const changed = name !== openQueue;
    openQueue = name;
    $("overview").hidden = !!name;
    $("queue").hidden = !name;
    if (name) {
      setText($("q-name"), name);
      document.title = name + " · WonderQ status";
      if (changed) {
        for (const id of ["attr-note", "action-note", "peek-note"]) showNote($(id), "", false);
        $("peek-list").replaceChildren();
        loadAttributes();
        peek();
      }
    } else {
      document.title = "WonderQ status";
    }
    render();
  }

  function render() {
    if (!current) return;
    const snap = current.snap;
    setText($("f-queues"), String(current.rows.size));
    const mem = snap.memory;
    setText($("f-memory"), fmtBytes(mem.used) + (mem.limit ? ` of ${fmtBytes(mem.limit)}` : " (no limit)"));
    setText($("f-store"), snap.store);
    setText($("f-uptime"), fmtDuration(snap.uptime_s));
    setText($("f-version"), snap.version);
    if (openQueue) renderQueue();
    else renderOverview();
  }

  // A token once asked for can be replaced (one with other rights) from the header.
  function setupToken() {
    $("token-button").hidden = !token;
    $("token-button").addEventListener("click", async () => {
      if (!(await askToken("The token this tab sends (kept in sessionStorage, sent as an Authorization: Bearer header).", true))) return;
      restartStream = true; // the stream (or the polling) starts over with the new token
      if (streamAbort) streamAbort.abort();
      if (openQueue) {
        loadAttributes();
        peek();
      }
    });
  }

  function start() {
    setupToken();
    setupOverview();
    setupQueuePage();
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", render);
    route();
    connect();
  }

  start();
})();
