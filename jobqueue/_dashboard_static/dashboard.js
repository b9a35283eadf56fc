// The jobqueue dashboard's page: plain JavaScript, no framework, nothing
// fetched from elsewhere. Data from the queue (names, payloads, errors) only
// ever reaches the page as text (textContent), never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const LOGIN = document.querySelector('meta[name="login-required"]').content === "yes";
const MAX_POINTS = 600;
const STATES = ["pending", "scheduled", "running", "completed", "failed", "cancelled"];
const SERIES = ["pending", "running", "scheduled"];
const TIME_FIELDS = ["submitted_at", "run_at", "started_at", "finished_at"];
const SVG = "http://www.w3.org/2000/svg";

const points = [];
const shown = new Map();
let detailId = null;
let detailMessage = "";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, props) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(props || {})) node.setAttribute(key, value);
  return node;
}

async function api(method, path) {
  const headers = method === "POST" ? { "X-CSRF-Token": CSRF } : {};
  const response = await fetch(path, { method, headers, credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("log in first");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  return body;
}

function jobPath(id, action) {
  return `/api/jobs/${encodeURIComponent(id)}${action ? "/" + action : ""}`;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, empty))]));
}

function formatTime(seconds) {
  if (typeof seconds !== "number") return String(seconds);
  const date = new Date(seconds * 1000);
  const ago = (Date.now() - date.getTime()) / 1000;
  const relative = Math.abs(ago) < 1 ? "now" : ago > 0 ? `${ago.toFixed(0)}s ago` : `in ${(-ago).toFixed(0)}s`;
  return `${date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")} (${relative})`;
}

// -- the overview ---------------------------------------------------------------

function render(view) {
  const connection = document.getElementById("connection");
  // A journal that cannot write refuses every change: as loud as a lost queue.
  const failing = view.connected && view.journal && view.journal.failing;
  connection.className = view.connected && !failing ? "status live" : "status down";
  connection.textContent = !view.connected ? `queue unreachable: ${view.error}`
    : failing ? `live, but its journal cannot write (${view.journal.error}): changes are refused`
    : "live";
  document.getElementById("updated").textContent = view.at ? `updated ${new Date(view.at * 1000).toLocaleTimeString()}` : "";
  renderChart();
  // A section is rebuilt only when what it shows changed: a button under
  // the pointer must not be replaced between press and release.
  changed("summary", [view.jobs, view.totals, (view.workers || []).length], () => renderSummary(view));
  changed("limits", [view.limits], () => renderLimits(view.limits || {}));
  renderQueues(view.queues || {}, view.queues_unlisted || 0);
  changed("workers", [view.workers, view.workers_unlisted],
    () => renderWorkers(view.workers || [], view.workers_unlisted || 0));
  changed("failed", [view.failed, view.failed_truncated], () => renderFailed(view.failed || [], view.failed_truncated));
  changed("pending", [view.pending, view.pending_truncated], () => renderPending(view.pending || [], view.pending_truncated));
}

function changed(section, data, draw) {
  const key = JSON.stringify(data ?? null);
  if (shown.get(section) === key) return;
  shown.set(section, key);
  draw();
}

function renderSummary(view) {
  const jobs = view.jobs || {};
  const totals = view.totals || {};
  const boxes = STATES.map((state) =>
    el("div", { class: `count ${state}`, data: { state } }, el("b", {}, jobs[state] ?? 0), el("span", {}, state)));
  boxes.push(el("div", { class: "count" }, el("b", {}, totals.submitted ?? 0), el("span", {}, "submitted since start")));
  boxes.push(el("div", { class: "count" }, el("b", {}, (view.workers || []).length), el("span", {}, "workers")));
  document.getElementById("summary").replaceChildren(...boxes);
}

// The bounds past which new submits get queue_full, and what to call them.
const FULL_AT = { waiting: "Waiting jobs", payload_bytes: "Bytes of unfinished jobs' payloads" };
// Warn from this share of a bound on: time to add workers or find the flood.
const WARN_FROM = 0.8;

function renderLimits(limits) {
  const warnings = [];
  for (const [name, label] of Object.entries(FULL_AT)) {
    const limit = limits[name];
    if (!limit || typeof limit.max !== "number" || limit.used < WARN_FROM * limit.max) continue;
    const share = Math.floor((100 * limit.used) / limit.max);
    warnings.push(el("p", { class: "warn", data: { limit: name } },
      `${label}: ${limit.used.toLocaleString("en")} of ${limit.max.toLocaleString("en")} (${share}%). ` +
      "At the limit, new submits are refused with queue_full."));
  }
  const box = document.getElementById("limits");
  box.replaceChildren(...warnings);
  box.hidden = !warnings.length;
}

function sumOver(point, series) {
  if (point.all) return point.all[series] || 0;
  let total = 0;
  for (const counts of Object.values(point.queues || {})) total += counts[series] || 0;
  return total;
}

function chartTop(values) {
  return Math.max(1, ...SERIES.flatMap((name) => values[name]));
}

function lineChart(width, height, values, labels) {
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const top = chartTop(values);
  const n = Math.max(2, values[SERIES[0]].length);
  const pad = labels ? 4 : 2;
  chart.append(svg("line", { class: "axis", x1: 0, y1: height - pad, x2: width, y2: height - pad }));
  for (const name of SERIES) {
    const coords = values[name].map((v, i) =>
      `${((i / (n - 1)) * width).toFixed(1)},${(height - pad - (v / top) * (height - 2 * pad)).toFixed(1)}`);
    if (coords.length) chart.append(svg("polyline", { class: name, points: coords.join(" ") }));
  }
  return chart;
}

function renderChart() {
  const values = {};
  for (const name of SERIES) values[name] = points.map((p) => sumOver(p, name));
  const span = points.length > 1 ? Math.round(points[points.length - 1].t - points[0].t) : 0;
  const legend = el("div", { class: "legend" }, `all queues, last ${span}s, top of the scale ${chartTop(values)}:`,
    ...SERIES.flatMap((name) => [el("i", { class: name }), name]));
  document.getElementById("chart").replaceChildren(lineChart(600, 140, values, true), legend);
}

function renderQueues(queues, unlisted) {
  const rows = Object.entries(queues).map(([name, counts]) => {
    const values = {};
    for (const series of SERIES) values[series] = points.map((p) => ((p.queues || {})[name] || {})[series] || 0);
    return el("tr", { data: { queue: name } },
      el("td", {}, el("code", {}, name)),
      el("td", { class: "num" }, counts.pending ?? 0),
      el("td", { class: "num" }, counts.scheduled ?? 0),
      el("td", { class: "num" }, counts.running ?? 0),
      el("td", {}, lineChart(180, 28, values, false)));
  });
  if (unlisted) {
    rows.push(el("tr", { class: "unlisted" }, el("td", { class: "empty", colspan: 5 },
      `and ${unlisted} more queue${unlisted === 1 ? "" : "s"} with fewer jobs, not shown`)));
  }
  fill(document.querySelector("#queues tbody"), rows, 5, "no queue has jobs waiting or running");
}

function renderWorkers(workers, unlistedWorkers) {
  document.getElementById("workers-count").textContent = `${workers.length} connected`
    + (unlistedWorkers ? ` (and ${unlistedWorkers} more connections the server did not list)` : "");
  const blocks = workers.map((worker) => {
    const status = worker.jobs.length ? `${worker.jobs.length} running` : worker.waiting ? "waiting for a job" : "idle";
    const jobs = worker.jobs.map((job) => {
      const fraction = typeof job.progress === "number" && job.progress >= 0 && job.progress <= 1 ? job.progress : null;
      return el("div", { class: "running-job", data: { jobId: job.job_id } },
        el("a", { href: "#", onclick: (e) => { e.preventDefault(); showDetail(job.job_id); } }, el("code", {}, job.job_id)),
        el("span", {}, job.name ?? ""),
        fraction !== null ? el("progress", { max: 1, value: fraction }) : null,
        el("span", {}, job.progress === undefined ? "" : fraction !== null ? `${Math.round(fraction * 100)}%` : `progress ${job.progress}`),
        job.note !== undefined ? el("span", { class: "mono" }, JSON.stringify(job.note)) : null);
    });
    return el("div", { class: "worker", data: { worker: worker.name } },
      el("span", { class: "name" }, worker.name),
      el("span", { class: "meta" }, worker.queues && worker.queues.length ? `${status} · queues: ${worker.queues.join(", ")}` : status),
      ...jobs);
  });
  const target = document.getElementById("workers");
  target.replaceChildren(...(blocks.length ? blocks : [el("p", { class: "empty" }, "no worker is connected")]));
}

function jobRow(job, cells) {
  return el("tr", { class: "job", data: { jobId: job.job_id }, onclick: () => showDetail(job.job_id) },
    el("td", {}, el("code", {}, job.job_id)), ...cells);
}

function renderFailed(failed, truncated) {
  document.getElementById("failed-count").textContent =
    `${failed.length}${truncated ? "+" : ""} failed job${failed.length === 1 ? "" : "s"}, oldest first`;
  const rows = failed.map((job) => jobRow(job, [
    el("td", {}, job.name),
    el("td", {}, job.queue),
    el("td", { class: "num" }, `${job.attempts_spent ?? job.attempt}${job.max_attempts ? " / " + job.max_attempts : ""}`),
    el("td", { class: "error-text" }, job.error ? `${job.error.type}: ${job.error.message}` : ""),
    el("td", {},
      el("button", { type: "button", class: "retry", onclick: (e) => { e.stopPropagation(); act("retry", job.job_id, e.target); } }, "Retry"),
      " ",
      el("button", { type: "button", class: "delete danger", onclick: (e) => { e.stopPropagation(); confirmDelete(job.job_id, e.target); } }, "Delete")),
  ]));
  fill(document.querySelector("#failed tbody"), rows, 6, "no failed jobs");
}

function renderPending(pending, truncated) {
  document.getElementById("pending-count").textContent =
    `${pending.length}${truncated ? "+" : ""} waiting, in the order they will run`;
  const rows = pending.map((job) => jobRow(job, [
    el("td", {}, job.name), el("td", {}, job.queue), el("td", { class: "num" }, job.priority ?? 0),
  ]));
  fill(document.querySelector("#pending tbody"), rows, 4, "nothing pending");
}

// -- actions --------------------------------------------------------------------

async function act(action, id, button) {
  if (button) button.disabled = true;
  try {
    await api("POST", jobPath(id, action));
    if (action === "retry") await showDetail(id, "Retried: back in line with a fresh budget of attempts.");
    else if (detailId === id) closeDetail();
  } catch (error) {
    await showDetail(id, `${action} failed: ${error.message}`);
  } finally {
    if (button) button.disabled = false;
  }
}

function confirmDelete(id, button) {
  if (button.dataset.armed === "yes") {
    act("delete", id, button);
    return;
  }
  button.dataset.armed = "yes";
  button.textContent = "Confirm delete";
  setTimeout(() => { button.dataset.armed = ""; button.textContent = "Delete"; }, 4000);
}

// -- one job --------------------------------------------------------------------

function valueNode(key, value) {
  if (TIME_FIELDS.includes(key)) return el("span", { class: "mono" }, formatTime(value));
  if (key === "state") return el("span", { class: `state ${value}`, id: "detail-state" }, value);
  if (value !== null && typeof value === "object") return el("pre", {}, JSON.stringify(value, null, 2));
  if (["payload", "result", "note"].includes(key)) return el("pre", {}, JSON.stringify(value));
  return el("span", {}, String(value));
}

function renderDetail(job) {
  document.getElementById("detail-id").textContent = job.job_id;
  document.getElementById("detail-message").textContent = detailMessage;
  const order = ["state", "name", "queue", "priority", "attempt", "attempts_spent", "max_attempts", "worker", ...TIME_FIELDS,
    "progress", "note", "payload", "result", "error"];
  const keys = [...order.filter((k) => k in job), ...Object.keys(job).filter((k) => k !== "job_id" && !order.includes(k))];
  const fields = keys.flatMap((key) => [el("dt", {}, key.replace(/_/g, " ")), el("dd", {}, valueNode(key, job[key]))]);
  if (!("payload" in job)) fields.push(el("dt", {}, "payload"), el("dd", { class: "empty" }, "not reported by this server"));
  if (job.state === "failed") {
    fields.push(el("dt", {}, ""), el("dd", {},
      el("button", { type: "button", class: "retry", onclick: (e) => act("retry", job.job_id, e.target) }, "Retry"), " ",
      el("button", { type: "button", class: "delete danger", onclick: (e) => confirmDelete(job.job_id, e.target) }, "Delete")));
  }
  document.getElementById("detail-fields").replaceChildren(...fields);
  document.getElementById("detail").hidden = false;
}

async function showDetail(id, message) {
  if (message !== undefined) detailMessage = message;
  else if (id !== detailId) detailMessage = "";
  detailId = id;
  try {
    const job = (await api("GET", jobPath(id))).job;
    if (detailId !== id) return; // another job was opened meanwhile
    changed("detail", [job, detailMessage], () => renderDetail(job));
  } catch (error) {
    shown.delete("detail");
    document.getElementById("detail-id").textContent = id;
    document.getElementById("detail-message").textContent = error.message;
    document.getElementById("detail-fields").replaceChildren();
    document.getElementById("detail").hidden = false;
  }
}

function closeDetail() {
  shown.delete("detail");
  detailId = null;
  detailMessage = "";
  document.getElementById("detail").hidden = true;
}

// -- live -----------------------------------------------------------------------

function addPoint(point) {
  if (!point) return;
  points.push(point);
  if (points.length > MAX_POINTS) points.shift();
}

async function start() {
  document.getElementById("detail-close").addEventListener("click", closeDetail);
  document.getElementById("logout").hidden = !LOGIN;
  const first = await api("GET", "/api/overview");
  for (const point of first.history || []) addPoint(point);
  render(first);
  const source = new EventSource("/events");
  source.addEventListener("overview", (event) => {
    const view = JSON.parse(event.data);
    addPoint(view.point);
    render(view);
    if (detailId !== null) showDetail(detailId);
  });
  source.addEventListener("error", () => {
    const connection = document.getElementById("connection");
    connection.className = "status down";
    connection.textContent = "live view lost; reconnecting…";
  });
}

start().catch((error) => {
  const connection = document.getElementById("connection");
  connection.className = "status down";
  connection.textContent = error.message;
});
