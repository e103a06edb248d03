// ochre's play page: one WebSocket to /play, frames in, keys and mouse out (docs/serve.md).
"use strict";

const KEYS = { KeyW: "w", KeyA: "a", KeyS: "s", KeyD: "d",
               ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down" };
const SEND_MS = 16;            // input goes out at most once per display frame
const KEEPALIVE_MS = 1000;     // keys held without change are re-sent now and then (the idle timeout)
const params = new URLSearchParams(location.search);
const format = params.get("format") || "jpeg";

const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
const hud = document.getElementById("hud");
const statusBox = document.getElementById("status");

// What the page knows, readable from outside (tests, the console).
const state = { player: null, fps: 0, latencyMs: null, frames: 0, players: null, maxPlayers: null,
                contexts: 0, closed: null, reason: null, locked: false };
window.ochre = state;

const held = new Set();
let mouse = [0, 0], changed = false, lastSend = 0, seq = 0, ackSeq = null, drawn = 0;
const sentAt = new Map();      // seq -> time sent
const frameTimes = [], latencies = [];
let ws = null;

function say(text) {
  statusBox.textContent = text;
  statusBox.hidden = !text;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${scheme}//${location.host}/play?format=${encodeURIComponent(format)}`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onText(JSON.parse(ev.data)) : onFrame(ev.data));
  ws.onclose = onClose;
}

function onText(msg) {
  if (msg.type === "hello") {
    state.player = msg.player;
    state.maxPlayers = msg.max_players;
    state.contexts = msg.contexts;
    say(document.pointerLockElement === canvas ? "" : "Click to play");
  } else if (msg.type === "ack") {
    ackSeq = msg.seq;          // the next frame is the first that answers this input
  } else if (msg.type === "stats") {
    state.players = msg.players;
    state.maxPlayers = msg.max_players;
  } else if (msg.type === "error") {
    state.reason = msg.reason;
  }
}

function onFrame(data) {
  const now = performance.now();
  if (ackSeq !== null) {                       // this frame answers every input up to ackSeq
    for (const [s, t] of sentAt) {
      if (s > ackSeq) break;
      latencies.push(now - t);
      sentAt.delete(s);
    }
    while (latencies.length > 60) latencies.shift();
  }
  ackSeq = null;
  frameTimes.push(now);
  while (frameTimes.length && now - frameTimes[0] > 1000) frameTimes.shift();
  const n = ++state.frames;
  if (format === "raw") {
    const rgb = new Uint8Array(data), image = ctx.createImageData(64, 64);
    for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
      image.data[j] = rgb[i]; image.data[j + 1] = rgb[i + 1]; image.data[j + 2] = rgb[i + 2]; image.data[j + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    drawn = n;
  } else {
    createImageBitmap(new Blob([data], { type: `image/${format}` })).then((bitmap) => {
      if (n > drawn) { ctx.drawImage(bitmap, 0, 0); drawn = n; }   // a late decode never paints over a newer frame
      bitmap.close();
    });
  }
  updateHud();
}

function updateHud() {
  state.fps = frameTimes.length;
  const sorted = [...latencies].sort((a, b) => a - b);
  state.latencyMs = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
  const lat = state.latencyMs === null ? "–" : `${state.latencyMs.toFixed(0)} ms`;
  const who = state.players === null ? "" : ` · ${state.players}/${state.maxPlayers} players`;
  hud.textContent = `${state.fps} fps · input to frame ${lat}${who}`;
}

function onClose(ev) {
  state.closed = ev.code;
  state.locked = false;
  if (document.pointerLockElement) document.exitPointerLock();
  const reason = state.reason || ev.reason;
  if (ev.code === 1013 || reason === "full") {
    say(`The server is full (${state.maxPlayers ?? "every"} players are playing). Click to try again.`);
  } else if (ev.code === 1006) {
    say("The connection dropped (the server stopped or the network went away). Click to reconnect.");
  } else {
    say(`Disconnected (${ev.code}${reason ? ": " + reason : ""}). Click to reconnect.`);
  }
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function flushInput() {
  const now = performance.now();
  const due = changed || (held.size && now - lastSend > KEEPALIVE_MS);
  if (!due || !ws || ws.readyState !== WebSocket.OPEN) return;
  seq += 1;
  sentAt.set(seq, now);
  send({ type: "input", keys: [...held], mouse: [mouse[0], mouse[1]], seq });
  mouse = [0, 0];
  changed = false;
  lastSend = now;
}

statusBox.addEventListener("click", () => {
  if (state.closed !== null) { state.closed = null; state.reason = null; say("Connecting…"); connect(); return; }
  canvas.requestPointerLock();
});
canvas.addEventListener("click", () => canvas.requestPointerLock());
document.addEventListener("pointerlockchange", () => {
  state.locked = document.pointerLockElement === canvas;
  if (state.closed === null) say(state.locked ? "" : "Click to play");
  if (!state.locked && held.size) { held.clear(); changed = true; }     // Esc: stop walking too
});
document.addEventListener("mousemove", (ev) => {
  if (document.pointerLockElement !== canvas) return;
  mouse[0] += ev.movementX;
  mouse[1] += ev.movementY;
  changed = true;
});
document.addEventListener("keydown", (ev) => {
  if (ev.code === "KeyR" && !ev.repeat) { send({ type: "reset" }); return; }
  const digit = /^Digit([1-9])$/.exec(ev.code);                         // 1..9: restart from that context frame
  if (digit && !ev.repeat && Number(digit[1]) <= state.contexts) {
    send({ type: "reset", context: Number(digit[1]) - 1 });
    return;
  }
  const key = KEYS[ev.code];
  if (!key) return;
  ev.preventDefault();                                                  // arrows must not scroll
  if (!held.has(key)) { held.add(key); changed = true; }
});
document.addEventListener("keyup", (ev) => {
  const key = KEYS[ev.code];
  if (key && held.delete(key)) changed = true;
});
window.addEventListener("blur", () => { if (held.size) { held.clear(); changed = true; } });
setInterval(flushInput, SEND_MS);
connect();
