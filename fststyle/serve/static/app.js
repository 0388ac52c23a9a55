// fststyle serve: the page. Plain JavaScript, no dependencies (the page works offline).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], photo: null, photoName: "photo", resultUrl: null, pending: false, again: false };

function status(id, text, error = false) {
  $(id).textContent = text;
  $(id).classList.toggle("error", error);
}

async function errorText(response) {
  try { return (await response.json()).error; } catch { return `${response.status} ${response.statusText}`; }
}

function currentModel() { return state.models.find((m) => m.name === $("model").value); }

// The style the controls choose: "" (a model of one style), a style name, or a JSON {name: weight} blend.
function styleChoice() {
  const model = currentModel();
  if (!model || model.styles.length < 2) return "";
  if ($("style").value !== "__blend__") return $("style").value;
  const blend = {};
  for (const input of $("blend").querySelectorAll("input")) blend[input.dataset.style] = Number(input.value);
  return JSON.stringify(blend);
}

function fillStyles() {
  const model = currentModel();
  const several = model && model.styles.length > 1;
  $("style-label").hidden = !several;
  $("style").replaceChildren();
  $("blend").replaceChildren();
  $("blend").hidden = true;
  if (!several) return;
  for (const name of model.styles) $("style").add(new Option(name, name));
  $("style").add(new Option("blend…", "__blend__"));
  for (const name of model.styles) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"),
      { type: "range", min: 0, max: 1, step: 0.05, value: (1 / model.styles.length).toFixed(2) });
    input.dataset.style = name;
    input.addEventListener("change", restylize);
    label.append(`${name} `, input);
    $("blend").append(label);
  }
}

async function loadModels() {
  const response = await fetch("/api/models");
  const info = await response.json();
  state.models = info.models;
  for (const model of info.models) {
    const text = `${model.name}${model.styles.length > 1 ? ` (${model.styles.length} styles)` : ""}`;
    $("model").add(new Option(text, model.name));
    $("model-b").add(new Option(text, model.name));
  }
  for (const engine of info.engines) $("engine").add(new Option(engine, engine));
  $("slow-caption").textContent = `optimisation at ${info.slow_image_size} px (time limit ${info.slow_time_limit} s)`;
  fillStyles();
}

function setPhoto(file) {
  state.photo = file;
  state.photoName = file.name.replace(/\.[^.]*$/, "") || "photo";
  $("before").src = URL.createObjectURL(file);
  $("slow-run").disabled = false;
  restylize();
}

// One request at a time: a change made while one runs triggers one more when it ends.
async function restylize() {
  if (!state.photo) return;
  if (state.pending) { state.again = true; return; }
  state.pending = true;
  status("photo-status", "stylising…");
  const query = new URLSearchParams({ model: $("model").value, style: styleChoice(), strength: $("strength").value,
                                      preserve_color: $("preserve-color").checked, format: "jpg" });
  try {
    const response = await fetch(`/api/stylize?${query}`, { method: "POST", body: state.photo,
                                                             headers: { "content-type": "application/octet-stream" } });
    if (!response.ok) { status("photo-status", await errorText(response), true); return; }
    const blob = await response.blob();
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    $("after").src = state.resultUrl;
    const style = response.headers.get("x-style") || "stylised";
    Object.assign($("download"), { href: state.resultUrl, download: `${state.photoName}_${style}.jpg` });
    const seconds = Number(response.headers.get("x-network-seconds"));
    $("timing").textContent = `network ${(seconds * 1000).toFixed(0)} ms`;
    $("compare").hidden = false;
    status("photo-status", "");
  } catch (error) {
    status("photo-status", `the server did not answer (${error})`, true);
  } finally {
    state.pending = false;
    if (state.again) { state.again = false; restylize(); }
  }
}

// ---- webcam: frames go over a WebSocket; the server serves the newest and drops stale ones ----
const cam = { stream: null, sockets: [], timer: null };

function socketUrl(path) { return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`; }

function webcamSettings(model) {
  const style = model === $("model").value ? styleChoice() : "";
  return JSON.stringify({ model, style: style.startsWith("{") ? JSON.parse(style) : (style || null),
                          strength: Number($("strength").value), preserve_color: $("preserve-color").checked,
                          temporal: $("temporal").checked ? "flow" : "none" });
}

function openStream(model, img, stats) {
  const socket = new WebSocket(socketUrl("/ws/webcam"));
  socket.binaryType = "blob";
  const stream = { socket, model, busy: false, frames: [], report: null };
  socket.onopen = () => socket.send(webcamSettings(model));
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      const report = JSON.parse(event.data);
      if (report.type === "error") status("cam-status", report.error, true);
      if (report.type === "dropped") stream.busy = false;  // send the next frame
      else stream.report = report;
      return;
    }
    const old = img.src;
    img.src = URL.createObjectURL(event.data);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    const now = performance.now();
    stream.frames = stream.frames.filter((t) => now - t < 2000).concat([now]);
    stream.busy = false;
    const r = stream.report || {};
    const fps = stream.frames.length / 2;
    const latency = stream.sentAt ? now - stream.sentAt : 0;
    stats.textContent = `${model}: ${fps.toFixed(1)} frames/s, ${latency.toFixed(0)} ms round trip, network ` +
                        `${((r.network_seconds || 0) * 1000).toFixed(0)} ms, ${r.dropped || 0} dropped`;
  };
  socket.onclose = () => { stream.closed = true; };
  return stream;
}

async function startCamera() {
  const [width, height] = $("cam-size").value.split("x").map(Number);
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({ video: { width, height }, audio: false });
  } catch (error) {
    status("cam-status", `no camera: ${error.message}`, true);
    return;
  }
  $("video").srcObject = cam.stream;
  await $("video").play();
  cam.sockets = [openStream($("model").value, $("cam-a"), $("cam-a-stats"))];
  $("cam-b-figure").hidden = !$("model-b").value;
  if ($("model-b").value) cam.sockets.push(openStream($("model-b").value, $("cam-b"), $("cam-b-stats")));
  const canvas = Object.assign(document.createElement("canvas"), { width, height });
  const context = canvas.getContext("2d");
  // Send a frame to each stream whose last frame came back; the server drops any that arrive while it works.
  cam.timer = setInterval(() => {
    const ready = cam.sockets.filter((s) => s.socket.readyState === WebSocket.OPEN && !s.busy);
    if (!ready.length) return;
    context.drawImage($("video"), 0, 0, width, height);
    canvas.toBlob((blob) => {
      for (const stream of ready) { stream.busy = true; stream.sentAt = performance.now(); stream.socket.send(blob); }
    }, "image/jpeg", 0.85);
  }, 15);
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  status("cam-status", "camera on");
}

function stopCamera() {
  clearInterval(cam.timer);
  for (const stream of cam.sockets) stream.socket.close();
  cam.sockets = [];
  if (cam.stream) for (const track of cam.stream.getTracks()) track.stop();
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  status("cam-status", "camera off");
}

function updateStreams() {
  for (const stream of cam.sockets) {
    if (stream.socket.readyState === WebSocket.OPEN) stream.socket.send(webcamSettings(stream.model));
  }
}

// ---- fast against slow ----
let slowSocket = null;

function scoresTable(scores) {
  const engines = Object.keys(scores);
  const terms = Object.keys(scores[engines[0]]);
  $("scores").tHead.innerHTML = `<tr><th>engine</th>${terms.map((t) => `<th>${t}</th>`).join("")}</tr>`;
  $("scores").tBodies[0].innerHTML = engines.map((engine) =>
    `<tr><td>${engine}</td>${terms.map((t) => `<td>${scores[engine][t].toPrecision(4)}</td>`).join("")}</tr>`).join("");
  $("scores").hidden = false;
}

function runSlow() {
  if (!state.photo) return;
  const socket = new WebSocket(socketUrl("/ws/optimize"));
  slowSocket = socket;
  socket.binaryType = "blob";
  let next = null;
  $("scores").hidden = true;
  $("slow-run").disabled = true;
  $("slow-cancel").disabled = false;
  status("slow-status", "starting…");
  socket.onopen = () => {
    const style = styleChoice();
    socket.send(JSON.stringify({ model: $("model").value, engine: $("engine").value,
                                 style: style.startsWith("{") ? JSON.parse(style) : (style || null) }));
    socket.send(state.photo);
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") {
      const report = JSON.parse(event.data);
      next = report;
      if (report.type === "error") status("slow-status", report.error, true);
      if (report.type === "status") status("slow-status", report.status);
      if (report.type === "fast") status("slow-status", `fast network: ${(report.seconds * 1000).toFixed(0)} ms; optimising…`);
      if (report.type === "progress") {
        Object.assign($("slow-progress"), { hidden: false, value: report.step, max: report.total });
        const terms = Object.entries(report.terms).map(([k, v]) => `${k} ${v.toPrecision(3)}`).join(", ");
        status("slow-status", `step ${report.step} of ${report.total}, ${report.seconds.toFixed(1)} s: ${terms}`);
      }
      if (report.type === "done") {
        const how = report.stopped ? `stopped (${report.stopped})` : "done";
        status("slow-status", `${how} at step ${report.step} of ${report.total || "?"} after ` +
                              `${(report.seconds || 0).toFixed(1)} s; fast: ${((report.fast_seconds || 0) * 1000).toFixed(0)} ms`);
        if (report.scores) scoresTable(report.scores);
      }
      return;
    }
    const target = next && next.type === "fast" ? $("slow-fast") : $("slow-image");
    const old = target.src;
    target.src = URL.createObjectURL(event.data);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  };
  socket.onclose = () => {
    $("slow-run").disabled = !state.photo;
    $("slow-cancel").disabled = true;
  };
}

function cancelSlow() {
  if (slowSocket && slowSocket.readyState === WebSocket.OPEN) slowSocket.send(JSON.stringify({ cancel: true }));
}

// ---- wiring ----
$("file").addEventListener("change", () => { if ($("file").files[0]) setPhoto($("file").files[0]); });
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  if (e.dataTransfer.files[0]) setPhoto(e.dataTransfer.files[0]);
});
$("model").addEventListener("change", () => { fillStyles(); restylize(); updateStreams(); });
$("style").addEventListener("change", () => { $("blend").hidden = $("style").value !== "__blend__"; restylize(); updateStreams(); });
$("strength").addEventListener("input", () => { $("strength-value").textContent = Number($("strength").value).toFixed(2); });
$("strength").addEventListener("change", () => { restylize(); updateStreams(); });
$("preserve-color").addEventListener("change", () => { restylize(); updateStreams(); });
$("temporal").addEventListener("change", updateStreams);
$("split").addEventListener("input", () => { $("after").style.clipPath = `inset(0 0 0 ${$("split").value}%)`; });
$("cam-start").addEventListener("click", startCamera);
$("cam-stop").addEventListener("click", stopCamera);
$("slow-run").addEventListener("click", runSlow);
$("slow-cancel").addEventListener("click", cancelSlow);
loadModels().catch((error) => status("photo-status", `cannot list the models: ${error}`, true));
