// The call page: join with microphone (and camera), then show each speaker's transcript with
// an emotion chip per utterance that updates as revisions arrive, and a timeline per speaker.
// Everything the page shows comes from the call's event stream (Server-Sent Events), the
// same replayable stream any subscriber gets.

const COLORS = {
  neutral: "#8a8f98", joy: "#f2b705", joyful: "#f2b705", surprise: "#ff7f0e", powerful: "#ff7f0e",
  anger: "#d62728", mad: "#d62728", sadness: "#1f77b4", sad: "#1f77b4", disgust: "#2ca02c",
  fear: "#9467bd", scared: "#9467bd", peaceful: "#17becf",
};
const $ = (id) => document.getElementById(id);
const state = { callId: null, token: null, pc: null, events: null, utterances: new Map(), speakers: new Map() };

function color(label) {
  if (COLORS[label]) return COLORS[label];
  let h = 0;
  for (const c of label) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 60% 45%)`;
}

function setStatus(text) { $("status").textContent = text; }

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${path}: HTTP ${response.status}`);
  return data;
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function connect(callId, token, camera, reuse) {
  // Echo cancellation, noise suppression and auto gain reshape the voice the model hears.
  const media = reuse || await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: camera,
  });
  state.media = media;
  const pc = new RTCPeerConnection({ iceServers: [] });
  media.getTracks().forEach((track) => pc.addTrack(track, media));
  pc.createDataChannel("emotions");  // the gateway pushes emotion events here too
  pc.addEventListener("connectionstatechange", () => setStatus(`Call ${callId}: ${pc.connectionState}.`));
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc);
  const answer = await api(`/v1/calls/${callId}/join`, {
    sdp: pc.localDescription.sdp, type: pc.localDescription.type, token,
  });
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  state.speakerId = answer.speaker_id;
  if (camera) {
    const view = $("self-view");
    view.srcObject = media;
    view.hidden = false;
    view.play().catch(() => {});
  }
  if (!reuse) watchCall(callId, token, camera);
  return pc;
}

// Reconnect: every 2 s ask the gateway whether it still has us in the call; when the
// connection failed or the gateway lost us (it restarted), join again with the same token
// and microphone -- the same speaker; the gateway restores the call. Stops after leaving.
async function stillIn(callId, token) {
  try {
    const r = await fetch(`/v1/calls/${callId}`, { headers: { Authorization: `Bearer ${token}` } });
    if (!r.ok) return false;
    const call = await r.json();
    return !state.speakerId || call.participants.some((p) => p.speaker_id === state.speakerId);
  } catch (_) {
    return false;
  }
}

function watchCall(callId, token, camera) {
  let misses = 0;
  let busy = false;
  const timer = setInterval(async () => {
    if ($("leave").hidden && state.pc) { clearInterval(timer); return; }  // the user left
    if (busy) return;
    const failed = state.pc && ["failed", "closed"].includes(state.pc.connectionState);
    misses = failed || !(await stillIn(callId, token)) ? misses + 1 : 0;
    if (misses < 2) return;
    busy = true;
    setStatus(`Call ${callId}: reconnecting…`);
    try {
      state.pc?.close();
      state.pc = await connect(callId, token, camera, state.media);
      misses = 0;
    } catch (err) {
      setStatus(`Call ${callId}: reconnecting (${err.message})…`);
    } finally {
      busy = false;
    }
  }, 1000);  // one cheap GET a second: a restarted gateway is rejoined within about 2 s
}

function subscribe(callId, token) {
  const url = `/v1/calls/${callId}/emotions?token=${encodeURIComponent(token)}&from=0`;
  const events = new EventSource(url);
  events.addEventListener("utterance", (e) => onUtterance(JSON.parse(e.data)));
  events.addEventListener("emotion", (e) => onEmotion(JSON.parse(e.data)));
  events.addEventListener("error", () => {
    if (events.readyState === EventSource.CLOSED) setStatus("The event stream closed.");
  });
  return events;
}

function speakerPanel(speakerId, name) {
  let panel = state.speakers.get(speakerId);
  if (panel) return panel;
  const section = document.createElement("section");
  section.className = "speaker";
  section.dataset.speaker = speakerId;
  const heading = document.createElement("h3");
  heading.textContent = name || speakerId;
  const canvas = document.createElement("canvas");
  canvas.className = "timeline";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `Emotion timeline of ${name || speakerId}`);
  const list = document.createElement("ol");
  list.className = "utterances";
  section.append(heading, canvas, list);
  $("speakers").append(section);
  panel = { section, canvas, list, items: [] };
  state.speakers.set(speakerId, panel);
  return panel;
}

function utteranceRow(id) {
  let u = state.utterances.get(id);
  if (!u) {
    u = { id, seq: Infinity, revision: -1 };
    state.utterances.set(id, u);
  }
  return u;
}

function onUtterance(msg) {
  const u = utteranceRow(msg.utterance_id);
  Object.assign(u, { seq: msg.seq, speaker: msg.speaker_id, name: msg.speaker_name, text: msg.text,
    start: msg.start_ms, end: msg.end_ms });
  render(u);
}

function onEmotion(msg) {
  const u = utteranceRow(msg.utterance_id);
  if (msg.revision < u.revision) return;  // keep the highest revision (events may repeat)
  Object.assign(u, { seq: msg.seq, speaker: u.speaker || msg.speaker_id, label: msg.label,
    score: msg.scores[msg.label], revision: msg.revision, final: msg.final });
  render(u);
}

function render(u) {
  const panel = speakerPanel(u.speaker, u.name);
  if (!u.element) {
    u.element = document.createElement("li");
    u.element.className = "utterance";
    u.element.innerHTML = '<time></time><span class="text"></span><span class="chip pending">…</span>';
    const after = [...panel.list.children].find((li) => state.utterances.get(li.dataset.id).seq > u.seq);
    u.element.dataset.id = u.id;
    panel.list.insertBefore(u.element, after || null);
    panel.items.push(u);
  }
  if (u.name) panel.section.querySelector("h3").textContent = u.name;
  u.element.querySelector("time").textContent = u.end !== undefined ? clock(u.end) : "";
  u.element.querySelector(".text").textContent = u.text ?? "";
  const chip = u.element.querySelector(".chip");
  if (u.label) {
    chip.className = u.final ? "chip final" : "chip provisional";
    chip.style.setProperty("--chip", color(u.label));
    chip.textContent = `${u.label} ${Math.round(100 * u.score)}%`;
    chip.title = u.final ? "final label" : `provisional (revision ${u.revision})`;
    chip.dataset.label = u.label;
    chip.dataset.revision = u.revision;
  }
  drawTimelines();
}

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function drawTimelines() {
  let span = 1;
  for (const u of state.utterances.values()) if (u.end) span = Math.max(span, u.end);
  for (const panel of state.speakers.values()) {
    const canvas = panel.canvas;
    canvas.width = canvas.clientWidth * devicePixelRatio;
    canvas.height = canvas.clientHeight * devicePixelRatio;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const u of panel.items) {
      if (!u.label || u.start === undefined) continue;
      const x = (u.start / span) * canvas.width;
      const w = Math.max(2, ((u.end - u.start) / span) * canvas.width);
      const h = u.score * canvas.height;
      ctx.globalAlpha = u.final ? 1 : 0.45;
      ctx.fillStyle = color(u.label);
      ctx.fillRect(x, canvas.height - h, w, h);
    }
  }
}

function showLegend(labels) {
  $("legend").replaceChildren(...labels.map((label) => {
    const li = document.createElement("li");
    li.innerHTML = '<span class="chip final"></span>';
    li.firstChild.textContent = label;
    li.firstChild.style.setProperty("--chip", color(label));
    return li;
  }));
}

async function start(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  const params = new URLSearchParams(location.search);
  const invite = new URLSearchParams(location.hash.slice(1)).get("invite");
  $("start").disabled = true;
  try {
    // The invite link carries the call's invite token: it mints participant tokens and
    // reads nothing. Everyone reads the call's events with their own participant token.
    let inviteToken;
    if (params.get("call") && invite) {
      state.callId = params.get("call");
      state.token = (await api(`/v1/calls/${state.callId}/participants`, { name, token: invite })).token;
      inviteToken = invite;
    } else {
      const call = await api("/v1/calls", { participants: [name] });
      state.callId = call.call_id;
      state.token = call.participants[0].token;
      inviteToken = call.invite_token;
      history.replaceState(null, "", `/?call=${call.call_id}#invite=${inviteToken}`);
    }
    $("invite-link").value = `${location.origin}/?call=${state.callId}#invite=${inviteToken}`;
    $("invite").hidden = false;
    state.events = subscribe(state.callId, state.token);
    setStatus(`Connecting to call ${state.callId}…`);
    state.pc = await connect(state.callId, state.token, $("camera").checked);
    $("leave").hidden = false;
    $("end").hidden = false;
  } catch (err) {
    setStatus(`Could not join: ${err.message}`);
    $("start").disabled = false;
  }
}

async function leave() {
  try { await api(`/v1/calls/${state.callId}/leave`, { token: state.token }); } catch (_) { /* gone */ }
  state.pc?.close();
  $("leave").hidden = true;
  $("end").hidden = true;
  $("start").disabled = false;
  setStatus("You left the call; its labels keep arriving below.");
}

async function endCall() {
  await leave();
  try {
    await api(`/v1/calls/${state.callId}/end`, { token: state.token });
    setStatus("Call ended; every label is final once the last ones arrive.");
  } catch (err) {
    setStatus(`Could not end the call: ${err.message}`);
  }
}

async function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("call")) $("start").textContent = "Join the call";
  $("join-form").addEventListener("submit", start);
  $("leave").addEventListener("click", leave);
  $("end").addEventListener("click", endCall);
  $("copy-invite").addEventListener("click", () => navigator.clipboard?.writeText($("invite-link").value));
  window.addEventListener("resize", drawTimelines);
  const info = await fetch("/v1/model").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  if (info) showLegend(info.labels);
}

init();
