// The samsp page: send each image to /api/predict, show the overlays, the pass switch, the numbers and downloads.
"use strict";

const el = (id) => document.getElementById(id);
const masks = []; // {name, png}: the final masks shown, for the zip
const queue = [];
let running = false;
let done = 0;
let total = 0;

function stemOf(name) {
  const dot = name.lastIndexOf(".");
  const stem = (dot > 0 ? name.slice(0, dot) : name).replace(/[^\w.-]/g, "_");
  return stem || "image";
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  el("model-name").textContent = info.name;
  const body = el("card").querySelector("tbody");
  const rows = [...info.card, ["precision", info.engine.precision || "fp32"]];
  for (const [label, value] of rows) {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.textContent = label;
    tr.appendChild(th);
    tr.insertCell().textContent = value;
  }
  const mb = info.limits.max_upload_bytes / 2 ** 20;
  const mp = info.limits.max_pixels / 1e6;
  el("limits").textContent = `${info.limits.formats.join(", ")} · up to ${mb} MB, ${mp} megapixels`;
}

async function pollHealth() {
  const status = el("status");
  try {
    const health = await (await fetch("/api/health")).json();
    status.className = health.queued ? "status busy" : "status ok";
    el("status-text").textContent = health.queued ? `working · ${health.queued} in queue` : "ready";
  } catch {
    status.className = "status down";
    el("status-text").textContent = "server unreachable";
  }
}

function showProgress() {
  el("progress").hidden = total === 0;
  el("progress-text").textContent = `${done} / ${total}`;
  el("progress-bar").style.width = total ? `${(100 * done) / total}%` : "0";
  el("zip").disabled = running || masks.length === 0;
  el("clear").disabled = running || (masks.length === 0 && done === 0);
}

function addFiles(files) {
  const images = [...files];
  if (!images.length) return;
  if (!running) {
    done = 0;
    total = 0;
  }
  el("empty").hidden = true;
  for (const file of images) {
    queue.push({ file, card: newCard(file.name) });
  }
  total += images.length;
  showProgress();
  if (!running) run();
}

async function run() {
  running = true;
  while (queue.length) {
    const { file, card } = queue.shift();
    card.querySelector(".result-state").textContent = "segmenting…";
    try {
      const body = new FormData();
      body.append("file", file, file.name);
      const response = await fetch("/api/predict?overlays=true", { method: "POST", body });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.detail || `the server answered ${response.status}`);
      fill(card, answer);
    } catch (error) {
      fail(card, error.message);
    }
    done += 1;
    showProgress();
  }
  running = false;
  showProgress();
  pollHealth();
}

function newCard(name) {
  const card = el("result-template").content.firstElementChild.cloneNode(true);
  card.querySelector(".result-name").textContent = name;
  card.querySelector(".result-name").title = name;
  card.querySelector(".result-state").textContent = "waiting";
  for (const part of card.querySelectorAll(".switch, .stats, .download, .figure")) part.hidden = true;
  el("results").appendChild(card);
  return card;
}

function fill(card, answer) {
  const img = card.querySelector(".overlay");
  const views = {
    final: `data:image/jpeg;base64,${answer.overlay_jpeg}`,
    0: `data:image/jpeg;base64,${answer.pass0_overlay_jpeg}`,
  };
  img.src = views.final;
  img.alt = `${answer.filename}: final mask in green, box in yellow`;
  for (const button of card.querySelectorAll(".pass")) {
    button.addEventListener("click", () => {
      for (const other of card.querySelectorAll(".pass")) other.setAttribute("aria-pressed", String(other === button));
      img.src = views[button.dataset.pass];
      card.dataset.view = button.dataset.pass;
    });
  }
  card.dataset.view = "final";
  card.querySelector(".score").textContent = answer.score.toFixed(3);
  card.querySelector(".area").textContent = `${(100 * answer.foreground).toFixed(1)} %`;
  card.querySelector(".box").textContent = answer.box ? answer.box.map((v) => Math.round(v)).join(", ") : "none";
  const ms = answer.milliseconds;
  card.querySelector(".time").textContent = ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
  card.querySelector(".warning").hidden = !answer.fallback;
  const name = `${stemOf(answer.filename)}.png`;
  const link = card.querySelector(".download");
  link.href = `data:image/png;base64,${answer.mask_png}`;
  link.download = name;
  card.querySelector(".result-state").textContent = `${answer.width} × ${answer.height}`;
  for (const part of card.querySelectorAll(".switch, .stats, .download, .figure")) part.hidden = false;
  card.classList.add("done");
  masks.push({ name, png: answer.mask_png });
}

function fail(card, message) {
  card.classList.add("failed");
  card.querySelector(".result-state").textContent = "not segmented";
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  card.appendChild(p);
}

// A zip of the masks (stored, not compressed: PNGs are compressed already), built here: no second prediction.
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function zipFiles(files) {
  const parts = [];
  const central = [];
  let offset = 0;
  const used = new Set();
  for (const { name, bytes } of files) {
    let unique = name;
    for (let n = 2; used.has(unique); n++) unique = name.replace(/\.png$/, `_${n}.png`);
    used.add(unique);
    const path = new TextEncoder().encode(`masks/${unique}`);
    const crc = crc32(bytes);
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(6, 0x0800, true); // UTF-8 names
    local.setUint16(12, 0x21, true); // 1980-01-01
    local.setUint32(14, crc, true);
    local.setUint32(18, bytes.length, true);
    local.setUint32(22, bytes.length, true);
    local.setUint16(26, path.length, true);
    const entry = new DataView(new ArrayBuffer(46));
    entry.setUint32(0, 0x02014b50, true);
    entry.setUint16(4, 20, true);
    entry.setUint16(6, 20, true);
    entry.setUint16(8, 0x0800, true);
    entry.setUint16(14, 0x21, true);
    entry.setUint32(16, crc, true);
    entry.setUint32(20, bytes.length, true);
    entry.setUint32(24, bytes.length, true);
    entry.setUint16(28, path.length, true);
    entry.setUint32(42, offset, true);
    parts.push(local, path, bytes);
    central.push(entry, path);
    offset += 30 + path.length + bytes.length;
  }
  const size = central.reduce((sum, part) => sum + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

function downloadZip() {
  const files = masks.map(({ name, png }) => ({
    name,
    bytes: Uint8Array.from(atob(png), (ch) => ch.charCodeAt(0)),
  }));
  const link = document.createElement("a");
  link.href = URL.createObjectURL(zipFiles(files));
  link.download = "samsp-masks.zip";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function clearResults() {
  masks.length = 0;
  done = 0;
  total = 0;
  for (const card of document.querySelectorAll(".result")) card.remove();
  el("empty").hidden = false;
  showProgress();
}

function setUp() {
  const drop = el("drop");
  el("files").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  // a file dropped beside the zone must not replace the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  el("zip").addEventListener("click", downloadZip);
  el("clear").addEventListener("click", clearResults);
  loadInfo().catch(() => (el("model-name").textContent = "(card unavailable)"));
  pollHealth();
  setInterval(pollHealth, 3000);
}

setUp();
