"""The live page of app.py --camera: one camera, one tracker, any number of viewers.

    python app.py --camera picamera2                  # the Pi camera; http://127.0.0.1:5000/live
    python app.py --camera 0 --host 0.0.0.0           # a USB camera, seen from the network
    python app.py --camera clip.mp4                   # a video file, played in real time, looped

A thread reads the camera, tracks the faces and measures them (monitor.Monitor) and encodes
the annotated frame as a JPEG once, whoever watches; each viewer's stream
(``/live/stream.mjpg``, MJPEG: an ``<img>`` shows it in every browser) sends the newest
frame and skips those it was too slow for. ``/live/status`` gives the measures and the
recent events as JSON; the page polls it and shows a banner while a face is drowsy. A
viewer that leaves stops its stream and nothing else; without viewers no JPEG is encoded.

A camera that stops (unplugged) is reported on the page and in ``/live/status`` and opened
again every few seconds; a video file starts again at its end.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time

import predict  # noqa: I001 - first: it caps OpenCV's image decoders before cv2 loads
import cv2
from flask import Flask, Response, jsonify, render_template

import config
import face_measures
import monitor
import tracking
from face_detector import InputError

REOPEN_S = 2.0  # wait between tries to open a camera that went away
RECENT_EVENTS = 20
BOUNDARY = "frame"


class LiveMonitor:
    """The camera's thread and what it last saw. ``start()``, then any number of
    ``stream()`` generators and ``status()`` calls from the web server's threads; ``stop()``."""

    def __init__(self, source_spec: str, model, detector, tracker_options=None, measure_options=None,
                 blink_options=None, options: monitor.OutputOptions | None = None, jpeg_quality: int = 80,
                 realtime: bool = True):
        self.source_spec = source_spec
        self.realtime = realtime  # a video file at its frame rate (False: as fast as it goes)
        self.options = options or monitor.OutputOptions()
        self.monitor = monitor.Monitor(model, detector, tracker_options, measure_options, blink_options,
                                       self.options.no_face_s)
        self.hook = monitor.make_hook(self.options)
        self.jpeg_quality = jpeg_quality
        self.source_name = source_spec
        self.frames = 0
        self.viewers = 0
        self.fps = 0.0
        self.error: str | None = None
        self._jpeg: bytes | None = None
        self._faces: list = []
        self._time_s = 0.0
        self._events: collections.deque = collections.deque(maxlen=RECENT_EVENTS)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    # -- the camera's thread ---------------------------------------------------------------
    def start(self) -> "LiveMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(10)
        if self.hook is not None:
            self.hook.close()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stopping.is_set():
            try:
                source = monitor.open_source(self.source_spec, self.options.camera_size)
            except InputError as err:
                self._report(f"{err}; trying again every {REOPEN_S:g} s")
                self._stopping.wait(REOPEN_S)
                continue
            self.source_name, self.error = source.name, None
            try:
                self._play(source, started)
            finally:
                source.release()
            if source.is_camera and not self._stopping.is_set():
                self._report(f"{source.name}: stopped delivering frames (unplugged?); trying again "
                             f"every {REOPEN_S:g} s")
                self._stopping.wait(REOPEN_S)

    def _play(self, source: monitor.Source, started: float) -> None:
        file_start = time.monotonic()
        played = 0
        recent: collections.deque = collections.deque(maxlen=30)
        while not self._stopping.is_set():
            if not source.is_camera and self.realtime:  # a file plays in real time
                self._stopping.wait(max(0.0, file_start + played / source.fps - time.monotonic()))
            frame = source.read()
            if frame is None:
                if not source.is_camera and played == 0:
                    self._report(f"{source.name}: no frames could be read")
                    self._stopping.wait(REOPEN_S)
                return
            played += 1
            now = time.monotonic()
            faces, events = self.monitor.process(frame, now - started)
            for event in events:
                print(monitor.event_text(event), flush=True)
                if self.hook is not None:
                    self.hook.offer(event)
            jpeg = None
            if self.viewers:
                annotated = self.monitor.annotate(frame, faces)
                ok, encoded = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                jpeg = encoded.tobytes() if ok else None
            recent.append(now)
            with self._changed:
                self._jpeg, self._faces, self._time_s = jpeg, faces, now - started
                self._events.extend(events)
                self.frames += 1
                self.fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                self._changed.notify_all()

    def _report(self, message: str) -> None:
        if message != self.error:
            print(f"error: {message}", file=sys.stderr, flush=True)
        with self._changed:
            self.error, self._jpeg, self._faces = message, None, []
            self._changed.notify_all()

    # -- the web server's threads ----------------------------------------------------------
    def stream(self):
        """One viewer's MJPEG parts: each new frame as it comes (the newest, when the viewer
        is slower than the camera). Ends when the viewer leaves or the monitor stops."""
        with self._changed:
            self.viewers += 1
        try:
            seen = -1
            while not self._stopping.is_set():
                with self._changed:
                    self._changed.wait_for(lambda: (self.frames != seen and self._jpeg is not None)
                                           or self._stopping.is_set(), timeout=5.0)
                    jpeg, index = self._jpeg, self.frames
                if jpeg is None or index == seen:
                    continue
                seen = index
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                       .encode() + jpeg + b"\r\n")
        finally:
            with self._changed:
                self.viewers -= 1

    def status(self) -> dict:
        """What the page shows: per face its measures and monitor, the recent events."""
        with self._changed:
            faces, events = list(self._faces), list(self._events)
            frames, time_s, fps, error = self.frames, self._time_s, self.fps, self.error
        shown = [{"track_id": face["track_id"], **{k: face["monitor"][k] for k in (
                      "eyes_closed", "blinks", "blink_rate_per_min", "perclos", "long_closures", "yawns",
                      "yawning", "drowsy")},
                  "left_ear": face["eyes"]["left_ear"], "right_ear": face["eyes"]["right_ear"],
                  "mar": face["mouth"]["mar"], "reason": face["pose"]["reason"]} for face in faces]
        return {"source": self.source_name, "error": error, "frames": frames, "time_s": round(time_s, 3),
                "fps": round(fps, 1), "viewers": self.viewers, "faces": shown,
                "drowsy": any(face["drowsy"] for face in shown), "no_face": not shown,
                "events": events[::-1]}


def register(app: Flask, live: LiveMonitor) -> None:
    """The live page's routes on app.py's Flask app."""

    @app.get("/live")
    def live_page():
        return render_template("live.html", source=live.source_name)

    @app.get("/live/stream.mjpg")
    def live_stream():
        response = Response(live.stream(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/live/status")
    def live_status():
        response = jsonify(live.status())
        response.headers["Cache-Control"] = "no-store"
        return response


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", metavar="SRC",
                        help="serve a live page at /live: a USB camera's index (0, 1...), picamera2 "
                        "(the Raspberry Pi camera module) or a video file (looped); docs/monitor.md")
    parser.add_argument("--refine-eyes", action="store_true",
                        help="with --camera: look at each eye again at twice the resolution (models/eyes.tflite), "
                        "so that closed eyes read as closed (docs/monitor.md)")
    config.add_option_flags(parser, tracking.TrackerOptions, "tracking (--camera)")
    config.add_option_flags(parser, face_measures.BlinkOptions, "blinks and yawns (--camera; docs/face_measures.md)")
    monitor.add_flags(parser, live=True)


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, model_path, detector_name: str):
    """The LiveMonitor app.py --camera asks for (not started), or None without --camera;
    flags out of range exit through parser.error, InputError for the model or detector."""
    tracker_options = config.options_from_args(args, tracking.TrackerOptions)
    blink_options = config.options_from_args(args, face_measures.BlinkOptions)
    monitor.check_flags(parser, tracker_options, blink_options)
    if not args.camera:
        return None
    model = predict.LandmarkModel(model_path, part_refiners=predict.load_part_refiners(predict.refined_parts(args)))
    return LiveMonitor(args.camera, model, predict.make_detector(detector_name),
                       tracker_options, None, blink_options, monitor.options_from_args(args))
