// dmha web page: upload or record audio, POST it to /v1/predict (or /v1/predict-long), draw the result.
// Plain DOM code, no dependencies; every server string is inserted as text, never as HTML.
"use strict";

const KNOWN_COLOURS = {
  angry: "#e03131", anger: "#e03131", happy: "#f59f00", happiness: "#f59f00", joy: "#f59f00",
  sad: "#1c7ed6", sadness: "#1c7ed6", neutral: "#868e96", calm: "#12b886", fearful: "#7048e8",
  fear: "#7048e8", disgust: "#2f9e44", disgusted: "#2f9e44", surprised: "#e8590c", surprise: "#e8590c",
  contempt: "#ae3ec9", other: "#495057",
};
const PALETTE = ["#3b5bdb", "#e03131", "#2f9e44", "#f59f00", "#7048e8", "#12b886", "#e8590c", "#ae3ec9",
                 "#1c7ed6", "#868e96"];
const $ = (id) => document.getElementById(id);
const state = { model: null, file: null, duration: null, recorder: null, chunks: [], started: 0, timer: null,
                longAuto: false };

function colour(label) {
  const known = KNOWN_COLOURS[label.toLowerCase()];
  if (known) return known;
  const labels = state.model ? state.model.labels : [];
  const k = Math.max(0, labels.indexOf(label));
  return PALETTE[k % PALETTE.length];
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "style") Object.assign(node.style, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function fmtTime(seconds) {
  const m = Math.floor(seconds / 60), s = seconds - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    state.model = await response.json();
    const m = state.model, enc = m.encoders;
    // A speech-only model (encoders.text = none) reads no transcript and runs no ASR: say so, and hide the
    // transcript field and outputs, which would only ever be empty.
    const speechOnly = m.reads_text === false;
    document.body.classList.toggle("speech-only", speechOnly);
    const text = speechOnly ? "speech only (no transcript, no ASR)"
                            : `${shortName(enc.text)} (text) · ${shortName(enc.asr)} (ASR)`;
    const members = m.ensemble ? ` · ensemble of ${m.members.length}` : "";
    const attributes = Object.keys(m.attributes || {});
    const predicts = [m.labels.length ? `${m.labels.length} emotions: ${m.labels.join(", ")}` : "",
                      attributes.length ? `attributes: ${attributes.join(", ")}` : ""].filter(Boolean).join(" · ");
    $("model-info").replaceChildren(
      el("span", { textContent: `${predicts}${members}` }), el("br"),
      el("span", { textContent: `encoders: ${shortName(enc.speech)} (speech) · ${text}` }));
    if (m.card) {  // shown as text: a card is the model's own words, never markup to run
      $("model-card").textContent = m.card;
      $("card-section").hidden = false;
    }
  } catch (err) {
    $("model-info").textContent = "could not load the model description";
  }
}

function shortName(id) {
  const parts = String(id).split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : String(id);
}

function chooseFile(file, duration = null) {
  state.file = file;
  state.duration = duration;
  $("file-name").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KB)`;
  const player = $("player");
  player.src = URL.createObjectURL(file);
  player.hidden = false;
  $("analyse").disabled = false;
  player.onloadedmetadata = () => {
    if (Number.isFinite(player.duration)) state.duration = player.duration;
    autoLong();
  };
  autoLong();
}

function autoLong() {
  // Clips over /v1/predict's limit go to /v1/predict-long; what the user ticked themselves is left alone.
  const limit = state.model ? state.model.limits.max_duration_s : 60, box = $("long");
  if (!state.duration) return;
  if (state.duration > limit && !box.checked) { box.checked = true; state.longAuto = true; }
  else if (state.duration <= limit && state.longAuto) { box.checked = false; state.longAuto = false; }
}

async function analyse() {
  if (!state.file) return;
  const long = $("long").checked;
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  const transcript = $("transcript").value.trim();
  if (transcript && !long) form.append("transcript", transcript);
  $("analyse").disabled = true;
  setStatus(long ? "Finding speech segments and predicting each…" : "Analysing…");
  document.body.dataset.state = "busy";
  const started = performance.now();
  try {
    const response = await fetch(long ? "/v1/predict-long" : "/v1/predict", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
    if (long) showTimeline(body); else showPrediction(body);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const length = state.duration ? ` · ${state.duration.toFixed(1)} s of audio` : "";
    setStatus(`${body.path}${length} · answered in ${seconds} s`);
    document.body.dataset.state = "done";
  } catch (err) {
    setStatus(`Error: ${err.message}`, true);
    document.body.dataset.state = "error";
  } finally {
    $("analyse").disabled = false;
  }
}

function showPrediction(p) {
  $("timeline-view").hidden = true;
  $("result").hidden = false;
  // The service leaves null fields out: no label (an attribute-only model, or no speech) arrives as undefined.
  p = { ...p, label: p.label ?? null, probs: p.probs || {} };
  const chip = $("label");
  chip.hidden = p.label === null;
  if (p.label !== null) {
    chip.textContent = p.label;
    chip.style.background = colour(p.label);
  }
  // No speech, no emotion: the service says why instead of showing a label (Prediction.reason).
  $("confidence").textContent = p.reason ? `No emotion: ${p.reason}`
    : p.label !== null ? `p = ${(100 * (p.probs[p.label] ?? 0)).toFixed(1)}%` : "";
  drawBars($("bars"), p.probs, p.label);
  drawAttributes($("attributes"), p.attributes || {});
  $("transcript-out").textContent = p.transcript || "(no speech recognised)";
  const votes = $("votes");
  votes.replaceChildren();
  votes.hidden = !p.votes;
  if (p.votes) {
    votes.append(el("p", { className: "field", textContent: "Ensemble votes" }));
    for (const [member, label] of Object.entries(p.votes)) {
      votes.append(el("div", {}, el("span", { className: "swatch", style: { background: colour(label) } }),
        `${member}: ${label}`));
    }
  }
}

// Emotional attributes (arousal, valence, ...): each value on its declared scale, as a bar from its minimum.
function drawAttributes(container, values) {
  container.replaceChildren();
  container.hidden = Object.keys(values).length === 0;
  const ranges = (state.model && state.model.attributes) || {};
  for (const [name, value] of Object.entries(values)) {
    const [low, high] = ranges[name] || [0, 1];
    const share = Math.min(1, Math.max(0, (value - low) / (high - low)));
    container.append(
      el("span", { className: "bar-name", textContent: name }),
      el("div", { className: "bar-track" },
        el("div", { className: "bar-fill attribute", style: { width: `${(100 * share).toFixed(1)}%` } })),
      el("span", { className: "bar-value", textContent: `${value.toFixed(2)} (${low}–${high})` }));
  }
}

function drawBars(container, probs, top) {
  container.replaceChildren();
  const labels = state.model ? state.model.labels.filter((l) => l in probs) : Object.keys(probs);
  for (const label of labels) {
    const p = probs[label];
    container.append(
      el("span", { className: "bar-name" + (label === top ? " top" : ""), textContent: label }),
      el("div", { className: "bar-track" },
        el("div", { className: "bar-fill", style: { width: `${(100 * p).toFixed(1)}%`, background: colour(label) } })),
      el("span", { className: "bar-value", textContent: `${(100 * p).toFixed(1)}%` }));
  }
}

function showTimeline(t) {
  $("result").hidden = true;
  $("timeline-view").hidden = false;
  const segments = t.segments || [];
  $("timeline-summary").textContent =
    `${segments.length} speech segment${segments.length === 1 ? "" : "s"} in ${fmtTime(t.duration)}`;
  const strip = $("timeline"), body = $("segments").querySelector("tbody");
  strip.replaceChildren();
  body.replaceChildren();
  const seen = new Set();
  for (const s of segments) {
    seen.add(s.label);
    const left = (100 * s.start) / t.duration, width = (100 * (s.end - s.start)) / t.duration;
    strip.append(el("div", { className: "seg", title: `${fmtTime(s.start)}–${fmtTime(s.end)} ${s.label}`,
      style: { left: `${left}%`, width: `${width}%`, background: colour(s.label) } }));
    body.append(el("tr", {},
      el("td", { className: "num", textContent: fmtTime(s.start) }),
      el("td", { className: "num", textContent: fmtTime(s.end) }),
      el("td", { className: "emotion" }, el("span", { className: "swatch", style: { background: colour(s.label) } }),
        s.label),
      el("td", { className: "num", textContent: `${(100 * (s.probs[s.label] ?? 0)).toFixed(0)}%` }),
      el("td", { className: "needs-text", textContent: s.transcript || "" })));
  }
  $("timeline-axis").replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map(
    (f) => el("span", { textContent: fmtTime(f * t.duration) })));
  $("legend").replaceChildren(...[...seen].map((label) =>
    el("span", {}, el("span", { className: "swatch", style: { background: colour(label) } }), label)));
}

function recordingType() {
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
}

async function toggleRecording() {
  if (state.recorder) { state.recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("Recording needs a browser with MediaRecorder, on https or localhost.", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus(`Microphone unavailable: ${err.message}`, true);
    return;
  }
  const type = recordingType();
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  state.recorder = recorder;
  state.chunks = [];
  state.started = performance.now();
  recorder.ondataavailable = (e) => { if (e.data.size) state.chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(state.timer);
    const seconds = (performance.now() - state.started) / 1000;
    const mime = recorder.mimeType || type || "audio/webm";
    const ext = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
    state.recorder = null;
    $("record").classList.remove("recording");
    $("record-text").textContent = "Record";
    chooseFile(new File(state.chunks, `recording.${ext}`, { type: mime }), seconds);
    analyse();
  };
  recorder.start(250);
  $("record").classList.add("recording");
  $("record-text").textContent = "Stop";
  state.timer = setInterval(() => {
    $("record-time").textContent = fmtTime((performance.now() - state.started) / 1000);
  }, 100);
}

function setUpDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", (e) => { if (e.target.files.length) chooseFile(e.target.files[0]); });
  $("analyse").addEventListener("click", analyse);
  $("long").addEventListener("change", () => { state.longAuto = false; });
  $("record").addEventListener("click", toggleRecording);
  setUpDrop();
  loadModel();
});
