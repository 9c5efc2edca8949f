// Shared by every page: the operator token, JSON calls, the live stream, number formats.
"use strict";

const Console = (() => {
  const TOKEN_KEY = "twin-console-token";
  const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hashToken) {  // `twin up` prints the URL with #token=...; keep it, drop it from the bar
    sessionStorage.setItem(TOKEN_KEY, hashToken);
    history.replaceState(null, "", location.pathname + location.search);
  }
  let operator = false;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path, options = {}) {
    const headers = { "accept": "application/json" };
    if (token()) headers["authorization"] = "Bearer " + token();
    if (options.body !== undefined) headers["content-type"] = "application/json";
    const reply = await fetch(path, {
      method: options.method || (options.body !== undefined ? "POST" : "GET"),
      headers,
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    });
    const data = await reply.json().catch(() => ({ error: `${reply.status} ${reply.statusText}` }));
    if (!reply.ok) throw new Error(data.error || reply.statusText);
    return data;
  }

  function say(text, isError) {
    const el = document.getElementById("message");
    el.textContent = text;
    el.className = isError ? "message error" : "message";
    el.hidden = !text;
  }

  async function act(promise, done) {  // run an operator call; show its error, if any
    try {
      const result = await promise;
      say("");
      if (done) done(result);
      return result;
    } catch (err) {
      say(err.message, true);
      return null;
    }
  }

  async function refreshRole() {
    const s = await api("/api/session");
    operator = s.operator;
    document.getElementById("role").textContent = s.operator ? "operator"
      : (s.control ? "viewer (read-only): enter the operator token" : "viewer (read-only console)");
    document.body.classList.toggle("operator", s.operator);
    for (const el of document.querySelectorAll(".act")) el.disabled = !s.operator;
  }

  function fixed(x, digits) {
    if (x === null || x === undefined) return "–";
    return Number(x).toLocaleString("en-US", {
      minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  // <b data-q="pue" data-scale="1e-6" data-digits="2">: a quantity of the snapshot;
  // data-t: a run total; data-s: a field of the snapshot itself.
  function bind(snapshot, root = document) {
    for (const el of root.querySelectorAll("[data-q],[data-t],[data-s]")) {
      let v;
      if (el.dataset.q) v = snapshot.quantities[el.dataset.q];
      else if (el.dataset.t) v = snapshot.totals[el.dataset.t];
      else v = snapshot[el.dataset.s];
      if (typeof v === "number") {
        const scale = Number(el.dataset.scale || 1);
        el.textContent = fixed(v * scale, Number(el.dataset.digits ?? 2));
      } else {
        el.textContent = v ?? "–";
      }
    }
    const run = document.getElementById("run");
    run.textContent = snapshot.run_id
      ? `run ${snapshot.run_id} · ${snapshot.state} · step ${snapshot.step}` : "no run";
    run.dataset.state = snapshot.state;
  }

  function live(onSnapshot) {
    const source = new EventSource("/api/live");
    source.addEventListener("snapshot", (e) => {
      const snapshot = JSON.parse(e.data);
      window.consoleSnapshot = snapshot;  // the one on screen (read by the browser tests)
      bind(snapshot);
      if (onSnapshot) onSnapshot(snapshot);
    });
    return source;
  }

  // scaleOf[i]: the y scale of series i (default one scale); the first two get an axis.
  function chart(el, title, seriesNames, data, unit, scaleOf) {
    el.replaceChildren();
    const colors = ["#d9480f", "#1971c2", "#2f9e44", "#862e9c", "#e8590c", "#0c8599"];
    const scaleNames = seriesNames.map((_, i) => (scaleOf ? scaleOf[i] : "y"));
    const series = [{ label: "time" }].concat(seriesNames.map((name, i) => ({
      label: name, stroke: colors[i % colors.length], width: 1.5, spanGaps: true,
      scale: scaleNames[i] })));
    const axes = [{ label: "simulated time, h" }].concat([...new Set(scaleNames)].slice(0, 2)
      .map((s, i) => ({ scale: s, label: scaleOf ? s : (unit || ""), side: i ? 1 : 3, size: 80,
        grid: { show: i === 0 } })));
    return new uPlot({
      title, width: Math.max(el.clientWidth, 400), height: 260, series,
      scales: { x: { time: false } }, axes,
    }, data, el);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("token").value = token();
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
      act(refreshRole());
    });
    act(refreshRole());
    // Pages without the live stream show the run in their header once.
    if (!["overview", "control"].includes(document.body.dataset.page)) {
      api("/api/snapshot").then(bind, () => {});
    }
  });

  return { api, act, say, live, bind, chart, fixed, isOperator: () => operator };
})();
