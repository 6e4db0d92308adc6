"use strict";
// Send a photo (chosen, dropped or a webcam snapshot) to api/landmarks and draw the answer.
// Plain browser JavaScript: no build step, nothing fetched from elsewhere.

(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const statusLine = $("status");
  const facesList = $("faces");
  const timingLine = $("timing");
  const outline = JSON.parse(canvas.dataset.outline); // [first, last, closed]: predict.OUTLINE_68
  const maxUploadBytes = Number(document.body.dataset.maxUploadBytes);
  const COLORS = { box: "rgb(0, 160, 255)", line: "rgb(0, 220, 0)", point: "rgb(255, 0, 0)" };
  // Head axes: x (the person's left) magenta, up yellow, forward (where the nose points)
  // blue; face_measures.AXIS_COLORS_BGR.
  const AXIS_COLORS = ["rgb(255, 0, 255)", "rgb(255, 220, 0)", "rgb(0, 60, 255)"];
  let latest = 0; // only the answer to the newest request is shown

  function setStatus(state, text) {
    statusLine.dataset.state = state;
    statusLine.textContent = text;
  }

  function clearResult() {
    facesList.replaceChildren();
    timingLine.textContent = "";
    canvas.width = canvas.height = 0;
    canvas.dataset.points = canvas.dataset.faces = canvas.dataset.axes = "0";
  }

  const megabytes = (bytes) => (bytes / 1048576).toFixed(1);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  // The picture as the browser shows it, or null for a format it cannot show (e.g. TIFF).
  function loadPicture(blob) {
    return new Promise((resolve) => {
      const url = URL.createObjectURL(blob);
      const picture = new Image();
      picture.onload = () => { URL.revokeObjectURL(url); resolve(picture); };
      picture.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
      picture.src = url;
    });
  }

  async function send(blob, name) {
    const ticket = ++latest;
    if (blob.size > maxUploadBytes) {
      clearResult();
      setStatus("error", `${name}: ${megabytes(blob.size)} MB is over the ` +
                         `${megabytes(maxUploadBytes)} MB upload limit`);
      return;
    }
    setStatus("busy", `Finding faces in ${name}…`);
    const form = new FormData();
    form.append("image", blob, name);
    const started = performance.now();
    let response, record;
    try {
      response = await fetch("api/landmarks", { method: "POST", body: form });
      record = await response.json();
    } catch (err) {
      if (ticket === latest) { clearResult(); setStatus("error", `${name}: request failed (${err.message})`); }
      return;
    }
    const roundTripMs = performance.now() - started;
    if (ticket !== latest) return;
    if (!response.ok) {
      clearResult();
      setStatus("error", record.error || `${name}: HTTP ${response.status}`);
      return;
    }
    const picture = await loadPicture(blob);
    if (ticket !== latest) return;
    draw(picture, record);
    report(record, roundTripMs);
  }

  // face_measures.rotation_from_angles: Rz(roll) Ry(-yaw) Rx(-pitch), angles in degrees.
  function rotationFromAngles(yaw, pitch, roll) {
    const [y, p, r] = [-yaw, -pitch, roll].map((deg) => deg * Math.PI / 180);
    const rx = [[1, 0, 0], [0, Math.cos(p), -Math.sin(p)], [0, Math.sin(p), Math.cos(p)]];
    const ry = [[Math.cos(y), 0, Math.sin(y)], [0, 1, 0], [-Math.sin(y), 0, Math.cos(y)]];
    const rz = [[Math.cos(r), -Math.sin(r), 0], [Math.sin(r), Math.cos(r), 0], [0, 0, 1]];
    const mul = (a, b) => a.map((row) => [0, 1, 2].map((j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
    return mul(rz, mul(ry, rx));
  }

  // face_measures.pose_axes_px: from the nose tip (point 30), 0.8 x the distance between the
  // outer eye corners (36, 45) long, projected orthographically. [origin, x end, up end, forward end].
  function poseAxes(landmarks, pose) {
    const [ax, ay] = landmarks[36], [bx, by] = landmarks[45];
    const length = 0.8 * Math.hypot(bx - ax, by - ay);
    const rot = rotationFromAngles(pose.yaw, pose.pitch, pose.roll);
    const [ox, oy] = landmarks[30];
    const ends = [[rot[0][0], rot[1][0]], [-rot[0][1], -rot[1][1]], [-rot[0][2], -rot[1][2]]];
    return [[ox, oy], ...ends.map(([dx, dy]) => [ox + length * dx, oy + length * dy])];
  }

  function drawAxes(ctx, face, unit) {
    if (!face.pose || face.pose.yaw === null || face.pose.yaw === undefined) return 0;
    const [origin, ...ends] = poseAxes(face.landmarks, face.pose);
    ctx.lineWidth = unit + 2;
    ends.forEach(([x, y], i) => {
      ctx.strokeStyle = AXIS_COLORS[i];
      ctx.beginPath();
      ctx.moveTo(origin[0] + 0.5, origin[1] + 0.5);
      ctx.lineTo(x + 0.5, y + 0.5);
      ctx.stroke();
    });
    ctx.lineWidth = unit;
    return 1;
  }

  const signed = (value) => `${value >= 0 ? "+" : "\u2212"}${Math.abs(value).toFixed(0)}°`;

  // One face's pose and openness as a line of text, or why there are none.
  function measuresText(face) {
    if (!face.pose) return "";
    if (face.pose.yaw === null) return face.pose.reason;
    return `yaw ${signed(face.pose.yaw)}, pitch ${signed(face.pose.pitch)}, roll ${signed(face.pose.roll)} · ` +
           `eyes (EAR) L ${face.eyes.left_ear.toFixed(2)} R ${face.eyes.right_ear.toFixed(2)} · ` +
           `mouth (MAR) ${face.mouth.mar.toFixed(2)}`;
  }

  // Landmarks are in OpenCV pixel coordinates (pixel centres on integers); a canvas puts
  // pixel centres at +0.5.
  function draw(picture, record) {
    canvas.width = record.width;
    canvas.height = record.height;
    const ctx = canvas.getContext("2d");
    if (picture) {
      ctx.drawImage(picture, 0, 0, record.width, record.height);
    } else {
      ctx.fillStyle = "#777";
      ctx.fillRect(0, 0, record.width, record.height);
    }
    const unit = Math.max(1, Math.round(Math.max(record.width, record.height) / 500));
    ctx.lineWidth = unit;
    let points = 0, axes = 0;
    for (const face of record.faces) {
      const [x, y, w, h] = face.box;
      ctx.strokeStyle = COLORS.box;
      ctx.strokeRect(x + 0.5, y + 0.5, w, h);
      axes += drawAxes(ctx, face, unit); // under the points
      ctx.strokeStyle = COLORS.line;
      for (const [first, last, closed] of outline) {
        ctx.beginPath();
        for (let i = first; i <= last; i++) ctx.lineTo(face.landmarks[i][0] + 0.5, face.landmarks[i][1] + 0.5);
        if (closed) ctx.closePath();
        ctx.stroke();
      }
      ctx.fillStyle = COLORS.point;
      for (const [px, py] of face.landmarks) {
        ctx.beginPath();
        ctx.arc(px + 0.5, py + 0.5, unit + 1, 0, 2 * Math.PI);
        ctx.fill();
      }
      points += face.landmarks.length;
    }
    canvas.dataset.points = String(points);
    canvas.dataset.faces = String(record.faces.length);
    canvas.dataset.axes = String(axes);
    fitCanvas();
  }

  // Shown as large as the column and 80% of the window allow, small photos enlarged.
  function fitCanvas() {
    if (!canvas.width) return;
    const scale = Math.min(canvas.parentElement.clientWidth / canvas.width,
                           0.8 * window.innerHeight / canvas.height, 4);
    canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
    canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
  }
  window.addEventListener("resize", fitCanvas);

  function report(record, roundTripMs) {
    facesList.replaceChildren(...record.faces.map((face, i) => {
      const [x, y, w, h] = face.box.map(Math.round);
      const item = document.createElement("li");
      item.className = "face";
      item.dataset.points = String(face.landmarks.length);
      item.textContent = `${face.landmarks.length} points, box ${w}×${h} at (${x}, ${y})`;
      const measures = document.createElement("span");
      measures.className = "measures";
      measures.textContent = measuresText(face);
      item.append(measures);
      return item;
    }));
    const size = `${record.width}×${record.height}`;
    const points = record.faces.reduce((sum, face) => sum + face.landmarks.length, 0);
    setStatus("done", record.faces.length
      ? `${plural(record.faces.length, "face")}, ${plural(points, "point")} in ${record.image} (${size})`
      : `No face found in ${record.image} (${size}): try a photo with a frontal face`);
    const t = record.timing_ms;
    timingLine.textContent = `server ${t.total} ms (decode ${t.decode}, detect ${t.detect}, ` +
                             `landmarks ${t.landmarks}) · round trip ${Math.round(roundTripMs)} ms`;
  }

  // A chosen or dropped file.
  const fileInput = $("file");
  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) send(fileInput.files[0], fileInput.files[0].name);
    fileInput.value = ""; // choosing the same file again is a new request
  });
  const drop = $("drop");
  window.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  window.addEventListener("dragleave", () => drop.classList.remove("over"));
  window.addEventListener("drop", (event) => {
    event.preventDefault(); // otherwise the browser leaves the page to show the file
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) send(file, file.name);
  });

  // A webcam snapshot, where the browser offers a camera (a secure context: localhost or https).
  if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    const video = $("video"), cameraButton = $("camera"), snapshotButton = $("snapshot");
    let stream = null;
    $("webcam").hidden = false;
    cameraButton.addEventListener("click", async () => {
      if (stream) {
        stream.getTracks().forEach((track) => track.stop());
        stream = null;
        video.hidden = snapshotButton.hidden = true;
        cameraButton.textContent = "Use webcam";
        return;
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      } catch (err) {
        setStatus("error", `webcam: ${err.message || err.name}`);
        return;
      }
      video.srcObject = stream;
      video.hidden = snapshotButton.hidden = false;
      cameraButton.textContent = "Stop webcam";
    });
    snapshotButton.addEventListener("click", () => {
      if (!video.videoWidth) { setStatus("error", "webcam: no picture yet, try again"); return; }
      const grab = document.createElement("canvas");
      grab.width = video.videoWidth;
      grab.height = video.videoHeight;
      grab.getContext("2d").drawImage(video, 0, 0);
      grab.toBlob((blob) => send(blob, "webcam.jpg"), "image/jpeg", 0.92);
    });
  }
})();
