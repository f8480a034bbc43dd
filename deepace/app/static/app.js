// DeepACE review page: plain JavaScript, no libraries, works offline.
"use strict";

const COLOURS = { blue: "#0072ff", orange: "#ff8c00", magenta: "#dc00dc", hover: "#ff1744" };
const CLICK_PX = 4; // a press that moves less than this is a click, not a drag
const MIN_BOX_PX = 3; // smallest box a reviewer can draw, in image pixels

const $ = (id) => document.getElementById(id);

const state = {
  cases: [],
  caseId: null,
  summary: null, // GET /cells answer
  cellId: null,
  cell: null, // GET /annotations answer
  boxes: [], // [{bbox:[x1,y1,x2,y2], score, source}] being edited
  candidates: [],
  reviewed: false,
  undo: [],
  image: null,
  view: { s: 1, ox: 0, oy: 0 },
  hover: null, // {kind: "box"|"cand", index}
  drag: null,
  spaceDown: false,
  save: { inFlight: false, pending: false, error: null },
};

// ------------------------------------------------------------------ API

async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) {
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(url, opts);
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const msg = (data && data.error) || `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return data;
}

const caseUrl = () => `/api/cases/${encodeURIComponent(state.caseId)}`;
const cellUrl = (id) => `${caseUrl()}/cells/${encodeURIComponent(id || state.cellId)}`;

// ------------------------------------------------------------------ reading order (as deepace.report.render)

function readingOrder(boxes) {
  const n = boxes.length;
  if (!n) return [];
  const cx = boxes.map((b) => (b[0] + b[2]) / 2);
  const cy = boxes.map((b) => (b[1] + b[3]) / 2);
  const heights = boxes.map((b) => b[3] - b[1]).sort((a, b) => a - b);
  const median = n % 2 ? heights[(n - 1) / 2] : (heights[n / 2 - 1] + heights[n / 2]) / 2;
  const rowHeight = Math.max(1, 0.5 * median);
  const byY = [...Array(n).keys()].sort((i, j) => cy[i] - cy[j] || cx[i] - cx[j]);
  const rows = [];
  let top = -Infinity;
  for (const i of byY) {
    if (cy[i] - top > rowHeight) {
      rows.push([]);
      top = cy[i];
    }
    rows[rows.length - 1].push(i);
  }
  return rows.flatMap((r) => r.sort((i, j) => cx[i] - cx[j] || cy[i] - cy[j]));
}

// ------------------------------------------------------------------ cases and cells list

async function loadCases() {
  state.cases = await api("GET", "/api/cases");
  const sel = $("case-select");
  sel.innerHTML = "";
  for (const c of state.cases) {
    const o = document.createElement("option");
    o.value = c.id;
    o.textContent = `${c.name} (${c.n_images} images)`;
    sel.appendChild(o);
  }
  if (!state.cases.length) {
    showMessage("No case folder was given to the server.");
    return;
  }
  const wanted = new URLSearchParams(location.hash.slice(1)).get("case");
  const first = state.cases.find((c) => c.id === wanted) || state.cases[0];
  sel.value = first.id;
  await openCase(first.id);
}

async function openCase(caseId) {
  state.caseId = caseId;
  state.cellId = null;
  $("cells").innerHTML = "";
  $("cells-note").textContent = "loading…";
  showMessage("Loading the case (counting images that have no model output yet)…");
  try {
    const summary = await api("GET", `${caseUrl()}/cells`);
    showSummary(summary);
    const next = summary.cells.find((c) => c.counted || !c.error) || summary.cells[0];
    if (next) await openCell(next.id);
    else showMessage("This case has no images yet. Use “Add image…”.");
  } catch (e) {
    showMessage(`Cannot open the case: ${e.message}`);
  }
}

function showSummary(summary) {
  state.summary = summary;
  $("open-report").href = `${caseUrl()}/report`;
  const tied = summary.tied_with && summary.tied_with.length ? ` (tied with ${summary.tied_with.join(", ")})` : "";
  const count = summary.case_count === null ? "—" : `${summary.case_count}${tied}`;
  const abnormal = summary.case_count !== null && (summary.case_count !== summary.expected || tied !== "");
  // the median while some counts are automatic, the mode once all are reviewed (rules.median_count)
  const basis = summary.count_basis === "median" ? "Median count" : "Modal count";
  $("case-stats").innerHTML =
    `<span>Cells <b>${summary.n_cells}</b></span>` +
    `<span>${basis} <b class="${abnormal ? "bad" : ""}">${count}</b></span>` +
    `<span>Reviewed <b>${summary.n_reviewed}/${summary.n_cells}</b></span>`;

  const flags = $("flags");
  flags.innerHTML = "";
  const all = summary.flags.slice();
  if (summary.counter_error) all.unshift({ severity: "alert", code: "COUNTER", message: summary.counter_error });
  if (summary.report_error)
    all.push({ severity: "warning", code: "REPORT", message: `Report not rebuilt: ${summary.report_error}` });
  for (const f of all) {
    const li = document.createElement("li");
    li.className = f.severity;
    li.textContent = f.message;
    li.title = f.code;
    flags.appendChild(li);
  }
  if (!all.length) flags.innerHTML = '<li class="info">No flags.</li>';

  const list = $("cells");
  list.innerHTML = "";
  summary.cells.forEach((c, i) => {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.className = [c.off_mode ? "off" : "", c.count === null ? "err" : "", c.id === state.cellId ? "current" : ""]
      .filter(Boolean)
      .join(" ");
    const tags =
      (c.off_mode ? '<span class="tag off">off case count</span>' : "") +
      (c.empty
        ? '<span class="tag off" title="left out of the case\'s counts until reviewed">no chromosome found</span>'
        : "") +
      (c.darkened ? '<span class="tag" title="faint fluorescence image, counted darkened">darkened</span>' : "") +
      (c.denoised_noise !== null && c.denoised_noise !== undefined
        ? `<span class="tag" title="pixel noise σ ${c.denoised_noise.toFixed(1)} grey levels, far above the training images'; smoothed before counting">denoised</span>`
        : "") +
      (c.unsteady && !c.reviewed
        ? `<span class="tag" title="counts in ${c.orientation_counts.length} orientations: ${c.orientation_counts.join(", ")}">unsteady</span>`
        : "") +
      (c.low_confidence && !c.reviewed
        ? `<span class="tag low" title="${c.low_confidence} low-confidence detections to check">${c.low_confidence} low</span>`
        : "") +
      (c.exact_chance !== null && c.exact_chance !== undefined && !c.reviewed && !c.corrected && !c.empty
        ? `<span class="tag chance" title="the model's own chance that its count is exact">${Math.round(c.exact_chance * 100)}%</span>`
        : "");
    let status = "";
    if (c.reviewed) status = '<span class="tick" title="reviewed">✓</span>';
    else if (c.corrected) status = '<span class="dot-corr" title="corrected, not yet marked reviewed">●</span>';
    li.innerHTML =
      `<span class="idx">${i + 1}</span><span class="name"></span>` +
      `<span class="cnt">${c.count === null ? "—" : c.count}</span><span class="state">${status}</span>`;
    const name = li.querySelector(".name");
    name.textContent = c.name;
    name.insertAdjacentHTML("beforeend", tags);
    li.title = c.error ? `${c.name}: ${c.error}` : c.name;
    li.addEventListener("click", () => openCell(c.id));
    list.appendChild(li);
  });
  $("cells-note").textContent = `(${summary.cells.length})`;
}

function markCurrentInList() {
  for (const li of $("cells").children) li.classList.toggle("current", li.dataset.id === state.cellId);
  const cur = $("cells").querySelector("li.current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------ one cell

async function openCell(cellId) {
  await flushSave();
  state.cellId = cellId;
  state.undo = [];
  state.hover = null;
  markCurrentInList();
  let cell;
  try {
    cell = await api("GET", `${cellUrl(cellId)}/annotations`);
  } catch (e) {
    showMessage(`Cannot open the cell: ${e.message}`);
    return;
  }
  if (state.cellId !== cellId) return;
  state.cell = cell;
  state.boxes = cell.boxes.map((b) => ({ ...b }));
  state.candidates = cell.candidates.map((b) => ({ ...b }));
  state.reviewed = cell.reviewed;
  updateCellInfo();
  const img = new Image();
  img.onload = () => {
    if (state.cellId !== cellId) return;
    state.image = img;
    hideMessage();
    fit();
    setSaveState(cell.reviewed ? "Reviewed" : "", "saved");
    document.body.dataset.cellReady = cellId;
  };
  img.onerror = () => {
    state.image = null;
    showMessage(`The image ${cell.name} cannot be shown${cell.error ? `: ${cell.error}` : ""}.`);
    draw();
  };
  state.image = null;
  delete document.body.dataset.cellReady;
  img.src = `${cellUrl(cellId)}/image`;
}

function updateCellInfo() {
  const cell = state.cell;
  if (!cell) return;
  const n = state.boxes.length;
  $("cell-name").textContent = cell.name;
  $("count").textContent = n;
  const mode = state.summary ? state.summary.case_count : null;
  $("count-box").classList.toggle("off", mode !== null && n !== mode);
  const hi = cell.low_confidence_band[1];
  const low = state.boxes.filter((b) => b.source === "model" && b.score !== null && b.score < hi).length;
  const manual = state.boxes.filter((b) => b.source === "manual").length;
  const parts = [];
  parts.push(cell.model_count === null ? "model: not counted" : `model: ${cell.model_count}`);
  if (low) parts.push(`${low} low-confidence`);
  const nc = state.candidates.length;
  if (nc) parts.push(`${nc} uncounted candidate${nc === 1 ? "" : "s"} (dashed)`);
  if (manual) parts.push(`${manual} drawn by you`);
  $("cell-sub").textContent = parts.join(" · ");
  const btn = $("reviewed");
  btn.textContent = state.reviewed ? "✓ Reviewed" : "Mark reviewed";
  btn.classList.toggle("on", state.reviewed);
  btn.title = state.reviewed ? "Reviewed: click to mark not reviewed (R)" : "Mark this cell reviewed (R)";
  $("undo").disabled = !state.undo.length;
}

// ------------------------------------------------------------------ editing and saving

function snapshot() {
  state.undo.push({
    boxes: state.boxes.map((b) => ({ ...b })),
    candidates: state.candidates.map((b) => ({ ...b })),
  });
  if (state.undo.length > 200) state.undo.shift();
}

function edited() {
  updateCellInfo();
  draw();
  requestSave();
}

function deleteBox(i) {
  snapshot();
  const [b] = state.boxes.splice(i, 1);
  if (b.source === "model" && b.score !== null && state.cell && b.score >= state.cell.low_confidence_band[0]
      && b.score < state.cell.score_threshold) {
    state.candidates.push({ bbox: b.bbox, score: b.score });
  }
  state.hover = null;
  edited();
}

function acceptCandidate(i) {
  snapshot();
  const [c] = state.candidates.splice(i, 1);
  state.boxes.push({ bbox: c.bbox, score: c.score, source: "model" });
  state.hover = null;
  edited();
}

function addBox(bbox) {
  snapshot();
  state.boxes.push({ bbox, score: null, source: "manual" });
  edited();
}

function undo() {
  const last = state.undo.pop();
  if (!last) return;
  state.boxes = last.boxes;
  state.candidates = last.candidates;
  edited();
}

function setSaveState(text, kind) {
  const el = $("save-state");
  el.textContent = text;
  el.className = `save-state ${kind || ""}`;
  document.body.dataset.saveState = kind || "";
}

function requestSave() {
  state.save.pending = true;
  setSaveState("Saving…", "saving");
  if (!state.save.inFlight) runSave();
}

async function runSave() {
  state.save.inFlight = true;
  while (state.save.pending) {
    state.save.pending = false;
    const cellId = state.cellId;
    const body = {
      boxes: state.boxes.map((b) => ({ bbox: b.bbox, score: b.score, source: b.source })),
      reviewed: state.reviewed,
    };
    try {
      const res = await api("PUT", `${cellUrl(cellId)}/annotations`, body);
      state.save.error = null;
      showSummary(res.case);
      if (!state.save.pending && state.cellId === cellId) {
        state.cell = res.cell;
        updateCellInfo();
      }
    } catch (e) {
      state.save.error = e.message;
      setSaveState(`Not saved: ${e.message}`, "error");
      break;
    }
  }
  state.save.inFlight = false;
  if (!state.save.error) setSaveState(state.reviewed ? "Saved · reviewed" : "Saved", "saved");
}

async function flushSave() {
  while (state.save.inFlight) await new Promise((r) => setTimeout(r, 30));
}

function toggleReviewed() {
  if (!state.cell) return;
  state.reviewed = !state.reviewed;
  updateCellInfo();
  requestSave();
}

async function reviewedAndNext() {
  if (!state.cell) return;
  if (!state.reviewed) toggleReviewed();
  await flushSave();
  const cells = state.summary.cells;
  const at = cells.findIndex((c) => c.id === state.cellId);
  const order = cells.slice(at + 1).concat(cells.slice(0, at));
  const next = order.find((c) => !c.reviewed && c.count !== null) || order.find((c) => !c.reviewed);
  if (next) await openCell(next.id);
  else setSaveState("All cells reviewed", "saved");
}

async function resetToModel() {
  if (!state.cell || !state.cell.has_corrections && !state.undo.length) return;
  if (!confirm("Drop your changes to this cell and go back to the model's boxes?")) return;
  await flushSave();
  try {
    const res = await api("DELETE", `${cellUrl()}/annotations`);
    showSummary(res.case);
    await openCell(state.cellId);
  } catch (e) {
    setSaveState(`Not reset: ${e.message}`, "error");
  }
}

function step(delta) {
  if (!state.summary || !state.summary.cells.length) return;
  const cells = state.summary.cells;
  const at = cells.findIndex((c) => c.id === state.cellId);
  const next = cells[(at + delta + cells.length) % cells.length];
  openCell(next.id);
}

async function uploadFile(file) {
  if (!file || !state.caseId) return;
  const form = new FormData();
  form.append("file", file);
  setSaveState(`Uploading ${file.name}…`, "saving");
  try {
    const res = await api("POST", `${caseUrl()}/cells`, form);
    showSummary(res.case);
    setSaveState(`Added ${res.cell ? res.cell.name : file.name}`, "saved");
    if (res.cell) await openCell(res.cell.id);
  } catch (e) {
    setSaveState(`Upload refused: ${e.message}`, "error");
  }
}

async function rebuildReport() {
  setSaveState("Rebuilding the report…", "saving");
  try {
    await api("POST", `${caseUrl()}/report`);
    setSaveState("Report rebuilt", "saved");
  } catch (e) {
    setSaveState(`Report failed: ${e.message}`, "error");
  }
}

// ------------------------------------------------------------------ drawing

const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function resizeCanvas() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
}

function fit() {
  resizeCanvas();
  if (!state.image) return draw();
  const r = canvas.getBoundingClientRect();
  const w = state.image.naturalWidth, h = state.image.naturalHeight;
  const s = Math.min(r.width / w, r.height / h) * 0.97;
  state.view = { s, ox: (r.width - w * s) / 2, oy: (r.height - h * s) / 2 };
  draw();
}

const toScreen = (x, y) => [x * state.view.s + state.view.ox, y * state.view.s + state.view.oy];
const toImage = (x, y) => [(x - state.view.ox) / state.view.s, (y - state.view.oy) / state.view.s];

function boxColour(b) {
  if (b.source === "manual") return COLOURS.magenta;
  if (b.score !== null && state.cell && b.score < state.cell.low_confidence_band[1]) return COLOURS.orange;
  return COLOURS.blue;
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const { s, ox, oy } = state.view;
  ctx.imageSmoothingEnabled = s < 2;
  ctx.drawImage(state.image, ox, oy, state.image.naturalWidth * s, state.image.naturalHeight * s);

  const rect = (b) => {
    const [x1, y1] = toScreen(b[0], b[1]);
    const [x2, y2] = toScreen(b[2], b[3]);
    return [x1, y1, x2 - x1, y2 - y1];
  };
  ctx.lineWidth = 2;
  ctx.setLineDash([6, 4]);
  state.candidates.forEach((c, i) => {
    const hot = state.hover && state.hover.kind === "cand" && state.hover.index === i;
    ctx.strokeStyle = hot ? COLOURS.blue : COLOURS.orange;
    ctx.lineWidth = hot ? 3 : 2;
    ctx.strokeRect(...rect(c.bbox));
  });
  ctx.setLineDash([]);

  const order = readingOrder(state.boxes.map((b) => b.bbox));
  const labels = [];
  order.forEach((i, k) => {
    const b = state.boxes[i];
    const hot = state.hover && state.hover.kind === "box" && state.hover.index === i;
    const colour = hot ? COLOURS.hover : boxColour(b);
    ctx.strokeStyle = colour;
    ctx.lineWidth = hot ? 3 : 2;
    const r = rect(b.bbox);
    ctx.strokeRect(...r);
    if (hot) {
      ctx.beginPath();
      ctx.moveTo(r[0], r[1]);
      ctx.lineTo(r[0] + r[2], r[1] + r[3]);
      ctx.moveTo(r[0] + r[2], r[1]);
      ctx.lineTo(r[0], r[1] + r[3]);
      ctx.stroke();
    }
    labels.push([r[0], r[1], String(k + 1), colour]);
  });

  const fontPx = Math.max(11, Math.min(18, Math.round(10 + 3 * Math.log2(1 + s))));
  ctx.font = `bold ${fontPx}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const [x, y, text, colour] of labels) {
    const tw = ctx.measureText(text).width + 4;
    const th = fontPx + 2;
    const ty = y - th >= 0 ? y - th : y;
    ctx.fillStyle = colour;
    ctx.fillRect(x, ty, tw, th);
    ctx.fillStyle = colour === COLOURS.orange ? "#000" : "#fff";
    ctx.fillText(text, x + 2, ty + 1);
  }

  if (state.drag && state.drag.mode === "draw") {
    const { x0, y0, x1, y1 } = state.drag;
    ctx.strokeStyle = COLOURS.magenta;
    ctx.lineWidth = 2;
    ctx.setLineDash([4, 3]);
    ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    ctx.setLineDash([]);
  }
}

// ------------------------------------------------------------------ mouse and keys

function eventPoint(e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function hitTest(sx, sy) {
  const [x, y] = toImage(sx, sy);
  const tol = 3 / state.view.s; // a few screen pixels of slack on thin boxes
  let best = null;
  const consider = (kind, list) =>
    list.forEach((b, index) => {
      const [x1, y1, x2, y2] = b.bbox;
      if (x >= x1 - tol && x <= x2 + tol && y >= y1 - tol && y <= y2 + tol) {
        const area = (x2 - x1) * (y2 - y1);
        if (!best || area < best.area) best = { kind, index, area };
      }
    });
  consider("box", state.boxes);
  consider("cand", state.candidates);
  return best;
}

canvas.addEventListener("contextmenu", (e) => e.preventDefault());

canvas.addEventListener("pointerdown", (e) => {
  if (!state.image) return;
  canvas.focus();
  const [x, y] = eventPoint(e);
  const pan = e.button === 1 || e.button === 2 || state.spaceDown;
  if (e.button !== 0 && !pan) return;
  canvas.setPointerCapture(e.pointerId);
  state.drag = { mode: pan ? "pan" : "press", x0: x, y0: y, x1: x, y1: y, ox: state.view.ox, oy: state.view.oy };
  if (pan) canvas.classList.add("panning");
  e.preventDefault();
});

canvas.addEventListener("pointermove", (e) => {
  const [x, y] = eventPoint(e);
  const d = state.drag;
  if (!d) {
    if (!state.image) return;
    const hit = hitTest(x, y);
    const changed = JSON.stringify(hit && [hit.kind, hit.index]) !== JSON.stringify(state.hover && [state.hover.kind, state.hover.index]);
    state.hover = hit;
    canvas.classList.toggle("over-box", !!hit);
    if (changed) draw();
    return;
  }
  d.x1 = x;
  d.y1 = y;
  if (d.mode === "pan") {
    state.view.ox = d.ox + (x - d.x0);
    state.view.oy = d.oy + (y - d.y0);
    draw();
  } else if (d.mode === "press" && Math.hypot(x - d.x0, y - d.y0) > CLICK_PX) {
    d.mode = "draw";
    state.hover = null;
    draw();
  } else if (d.mode === "draw") {
    draw();
  }
});

function endDrag(e) {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  canvas.classList.remove("panning");
  if (d.mode === "press") {
    const hit = hitTest(d.x0, d.y0);
    if (hit && hit.kind === "box") deleteBox(hit.index);
    else if (hit && hit.kind === "cand") acceptCandidate(hit.index);
  } else if (d.mode === "draw") {
    const [ax, ay] = toImage(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1));
    const [bx, by] = toImage(Math.max(d.x0, d.x1), Math.max(d.y0, d.y1));
    const w = state.image.naturalWidth, h = state.image.naturalHeight;
    const box = [Math.max(0, ax), Math.max(0, ay), Math.min(w, bx), Math.min(h, by)].map((v) => Math.round(v * 10) / 10);
    if (box[2] - box[0] >= MIN_BOX_PX && box[3] - box[1] >= MIN_BOX_PX) addBox(box);
    else draw();
  }
}

canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", () => {
  state.drag = null;
  draw();
});
canvas.addEventListener("pointerleave", () => {
  if (!state.drag && state.hover) {
    state.hover = null;
    draw();
  }
});

canvas.addEventListener(
  "wheel",
  (e) => {
    if (!state.image) return;
    e.preventDefault();
    const [x, y] = eventPoint(e);
    const [ix, iy] = toImage(x, y);
    const factor = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
    const s = Math.min(40, Math.max(0.02, state.view.s * factor));
    state.view = { s, ox: x - ix * s, oy: y - iy * s };
    draw();
  },
  { passive: false },
);

window.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  if (e.key === " ") {
    state.spaceDown = true;
    e.preventDefault();
  } else if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") {
    undo();
    e.preventDefault();
  } else if (e.key === "ArrowRight") step(1);
  else if (e.key === "ArrowLeft") step(-1);
  else if (e.key === "r" || e.key === "R") toggleReviewed();
  else if (e.key === "f" || e.key === "F") fit();
  else if (e.key === "Enter") reviewedAndNext();
  else if ((e.key === "Delete" || e.key === "Backspace") && state.hover && state.hover.kind === "box") deleteBox(state.hover.index);
});
window.addEventListener("keyup", (e) => {
  if (e.key === " ") state.spaceDown = false;
});
window.addEventListener("resize", () => {
  resizeCanvas();
  draw();
});
window.addEventListener("beforeunload", (e) => {
  if (state.save.inFlight || state.save.pending || state.save.error) e.preventDefault();
});

// ------------------------------------------------------------------ messages and wiring

function showMessage(text) {
  const m = $("stage-msg");
  m.textContent = text;
  m.hidden = false;
}

function hideMessage() {
  $("stage-msg").hidden = true;
}

$("case-select").addEventListener("change", (e) => {
  location.hash = `case=${encodeURIComponent(e.target.value)}`;
  openCase(e.target.value);
});
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("undo").addEventListener("click", undo);
$("reset").addEventListener("click", resetToModel);
$("fit").addEventListener("click", fit);
$("reviewed").addEventListener("click", toggleReviewed);
$("reviewed-next").addEventListener("click", reviewedAndNext);
$("rebuild-report").addEventListener("click", rebuildReport);
$("upload").addEventListener("change", (e) => {
  uploadFile(e.target.files[0]);
  e.target.value = "";
});

loadCases().catch((e) => showMessage(`Cannot reach the DeepACE server: ${e.message}`));
