// The live page: polls live/status and shows the measures, the events and a banner while
// a face is drowsy. The video itself is the <img>'s MJPEG stream.
"use strict";

const POLL_MS = 500;
const EVENT_TEXT = {
  blink: "blink", long_closure: "long eye closure", yawn: "yawn", drowsy: "DROWSY",
  drowsy_end: "no longer drowsy", no_face: "no face", face_back: "a face again",
};

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function faceRow(face) {
  const row = document.createElement("tr");
  row.className = face.drowsy ? "drowsy" : "";
  row.dataset.trackId = face.track_id;
  const ear = face.left_ear === null ? null : (face.left_ear + face.right_ear) / 2;
  const state = face.drowsy ? "drowsy" : face.eyes_closed ? "eyes closed" : face.yawning ? "yawning"
    : face.reason ? face.reason : "awake";
  const cells = [face.track_id, fixed(ear, 2), fixed(face.mar, 2), face.blinks,
    fixed(face.blink_rate_per_min, 0), face.perclos === null ? "–" : `${(100 * face.perclos).toFixed(0)} %`,
    face.yawns, state];
  for (const [index, text] of cells.entries()) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (index === 3) cell.className = "blinks";
    if (index === 5) cell.className = "perclos";
    row.append(cell);
  }
  return row;
}

function eventItem(event) {
  const item = document.createElement("li");
  const who = event.track_id === undefined ? "" : `face ${event.track_id}: `;
  const extra = event.duration_s !== undefined ? ` (${event.duration_s.toFixed(2)} s)` : "";
  item.textContent = `${event.time_s.toFixed(1)} s  ${who}${EVENT_TEXT[event.type] || event.type}${extra}`;
  item.dataset.type = event.type;
  return item;
}

function show(status) {
  const banner = document.getElementById("banner");
  banner.hidden = !status.drowsy;
  const line = document.getElementById("camera-status");
  line.dataset.state = status.error ? "error" : "ok";
  line.dataset.frames = status.frames;
  line.textContent = status.error ? status.error
    : `${status.source}: ${status.fps.toFixed(1)} frames/s, ${status.viewers} viewer(s)`
      + (status.no_face ? " · no face" : "");
  document.querySelector("#measures tbody").replaceChildren(...status.faces.map(faceRow));
  document.getElementById("events").replaceChildren(...status.events.map(eventItem));
}

async function poll() {
  try {
    const response = await fetch(document.body.dataset.statusUrl, { cache: "no-store" });
    if (response.ok) show(await response.json());
  } catch (error) {
    const line = document.getElementById("camera-status");
    line.dataset.state = "error";
    line.textContent = "the server does not answer";
  }
  setTimeout(poll, POLL_MS);
}

poll();
