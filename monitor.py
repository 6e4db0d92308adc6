"""A drowsiness monitor you can leave running: camera sources, the frame loop, bounded
outputs and a command run on each event. predict.py --video and app.py --camera use it.

    python predict.py --video picamera2 --on-event 'python docs/examples/buzzer.py'  # Pi camera
    python predict.py --video 0 --record                                # USB camera, video kept
    python predict.py --video clip.mp4                                  # a file, as before

Sources (``open_source``): a video file, a USB camera by index (``0``, ``1``...) through
OpenCV, or the Raspberry Pi camera module (``picamera2``, ``picamera2:1`` for a second one)
through the ``picamera2`` library, which Raspberry Pi OS ships as ``python3-picamera2``.

Outputs never grow without bound for a camera unless asked: the log holds the events only
(or, with ``--log frames``, one line per frame, rotated by size) and the annotated video is
written only with ``--record``. For a file: the per-frame log and the annotated video.
A run never replaces an earlier run's files (``-2``, ``-3``... are added), and what it
writes stays whole and playable whatever stops it. docs/monitor.md says more.

NumPy and OpenCV only: this module runs on the Raspberry Pi path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import predict  # noqa: I001 - first: it caps OpenCV's image decoders before cv2 loads
import cv2
import numpy as np

import config
import face_measures
import tracking
from face_detector import InputError

PICAMERA2 = "picamera2"
DEFAULT_CAMERA_SIZE = (640, 480)
PICAMERA2_MISSING = (f"{PICAMERA2}: the picamera2 library is not installed. On Raspberry Pi OS: "
                     "sudo apt install python3-picamera2, and make the virtual environment with "
                     "python3 -m venv --system-site-packages so that it sees it (docs/monitor.md)")


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------

class Source:
    """Frames from a file or a camera. ``read()`` gives the next BGR frame, or None at the
    end of a file or when a camera stops answering. ``name``: for messages; ``stem``: for
    output file names; ``fps``: the frame rate; ``frame_count``: a file's frames (0 for a
    camera)."""

    name: str
    stem: str
    is_camera: bool
    fps: float = 30.0
    frame_count: int = 0

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def release(self) -> None:
        pass


class OpenCVSource(Source):
    """A video file, or a USB camera by its index, through cv2.VideoCapture."""

    def __init__(self, spec: str, camera_size=DEFAULT_CAMERA_SIZE):
        self.is_camera = spec.isdigit()
        self.name = f"camera {spec}" if self.is_camera else spec
        self.stem = f"camera{spec}" if self.is_camera else Path(spec).stem
        self.capture = cv2.VideoCapture(int(spec) if self.is_camera else spec)
        if not self.capture.isOpened():
            self.capture.release()
            if self.is_camera:
                fault = "cannot open camera (is it connected, and free?)"
            elif not Path(spec).is_file():
                fault = "cannot open video: no such file"
            else:
                fault = "cannot open video: not a video OpenCV can read, or cut short before its index"
            raise InputError(f"{spec}: {fault}")
        if self.is_camera and camera_size:
            self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, camera_size[0])
            self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, camera_size[1])
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else 30.0
        self.frame_count = 0 if self.is_camera else max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        return frame if ok else None

    def release(self) -> None:
        self.capture.release()


class PiCameraSource(Source):
    """The Raspberry Pi camera module through picamera2 (libcamera): OpenCV cannot open it on
    Raspberry Pi OS Bookworm and later. ``picamera2_class``: the library's ``Picamera2``
    (found by import when None)."""

    is_camera = True

    def __init__(self, camera_number: int = 0, camera_size=DEFAULT_CAMERA_SIZE, fps: float = 30.0,
                 picamera2_class=None):
        if picamera2_class is None:
            try:
                from picamera2 import Picamera2 as picamera2_class  # noqa: N813 - the library's name
            except ImportError:
                raise InputError(PICAMERA2_MISSING) from None
        self.name = PICAMERA2 if camera_number == 0 else f"{PICAMERA2}:{camera_number}"
        self.stem = PICAMERA2 if camera_number == 0 else f"{PICAMERA2}-{camera_number}"
        self.fps = fps
        try:
            self.camera = picamera2_class(camera_number)
        except Exception as err:  # noqa: BLE001 - the library raises IndexError, RuntimeError...
            raise InputError(f"{self.name}: cannot open the camera (is it connected, and enabled? "
                             f"{type(err).__name__}: {err})") from None
        try:
            # libcamera's "RGB888" is stored B, G, R: OpenCV's order.
            self.camera.configure(self.camera.create_video_configuration(
                main={"size": tuple(camera_size), "format": "RGB888"}, controls={"FrameRate": fps}))
            self.camera.start()
        except Exception as err:  # noqa: BLE001
            self.release()
            raise InputError(f"{self.name}: cannot start the camera ({type(err).__name__}: {err})") from None

    def read(self) -> np.ndarray | None:
        try:
            frame = self.camera.capture_array("main")
        except Exception:  # noqa: BLE001 - a camera that went away: the caller reports it
            return None
        if frame is None:
            return None
        frame = np.asarray(frame)
        return np.ascontiguousarray(frame[:, :, :3]) if frame.ndim == 3 and frame.shape[2] == 4 else frame

    def release(self) -> None:
        for step in ("stop", "close"):
            try:
                getattr(self.camera, step)()
            except Exception:  # noqa: BLE001 - releasing a camera that is gone
                pass


def open_source(spec: str, camera_size=DEFAULT_CAMERA_SIZE) -> Source:
    """``picamera2`` or ``picamera2:N``: the Pi camera; digits: a USB camera; anything else:
    a video file. InputError naming the source and the fault when it cannot be opened."""
    if spec == PICAMERA2 or spec.startswith(PICAMERA2 + ":"):
        number = spec.partition(":")[2] or "0"
        if not number.isdigit():
            raise InputError(f"{spec}: the camera number after '{PICAMERA2}:' must be 0, 1...")
        return PiCameraSource(int(number), camera_size)
    return OpenCVSource(spec, camera_size)


def frame_size(text: str) -> tuple[int, int]:
    """``640x480`` as (640, 480): the --camera-size flag."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and 16 <= int(width) <= 8192 and 16 <= int(height) <= 8192):
        raise argparse.ArgumentTypeError(f"wants WIDTHxHEIGHT in pixels (16 to 8192), e.g. 640x480, got {text!r}")
    return int(width), int(height)


# ---------------------------------------------------------------------------------------
# The monitor: tracker, measures, events
# ---------------------------------------------------------------------------------------

EVENT_TYPES = ("blink", "long_closure", "yawn", "drowsy", "drowsy_end", "no_face", "face_back")


class Monitor:
    """Faces tracked through the frames, each face's blinks, PERCLOS and yawns, and the
    events they make. ``process(frame, timestamp_s)`` once per frame, timestamps increasing:
    (the faces' video-log records, the events of this frame).

    Events (each ``{"type", "time_s", ...}``): ``blink``, ``long_closure`` and ``yawn`` as
    face_measures.BlinkMonitor finds them; ``drowsy`` when a face becomes drowsy and
    ``drowsy_end`` when it no longer is; ``no_face`` once no face has been seen for
    ``no_face_s`` seconds, ``face_back`` when one is seen again.
    """

    def __init__(self, model, detector, tracker_options: tracking.TrackerOptions | None = None,
                 measure_options: face_measures.MeasureOptions | None = None,
                 blink_options: face_measures.BlinkOptions | None = None, no_face_s: float = 5.0):
        self.tracker = tracking.FaceTracker(model, detector, tracker_options)
        self.face_monitors = face_measures.FaceMonitors(blink_options, measure_options)
        self.no_face_s = no_face_s
        self._drowsy_since: dict = {}  # track id -> when it became drowsy
        self._start_s: float | None = None
        self._last_face_s: float | None = None
        self._no_face_sent = False
        self._size: tuple | None = None

    def process(self, frame_bgr: np.ndarray, timestamp_s: float) -> tuple[list[dict], list[dict]]:
        size = (frame_bgr.shape[1], frame_bgr.shape[0])
        if self._size is not None and size != self._size:
            self.tracker.tracks = []  # the points of the old picture size mean nothing in this one
        self._size = size
        if self._start_s is None:
            self._start_s = timestamp_s
        tracked = self.tracker.update(frame_bgr, timestamp_s)
        faces = [self.face_monitors.observe(timestamp_s, face.track_id, record, face.landmarks_px, size)
                 for face, record in zip(tracked, predict.faces_json(tracked))]
        self.face_monitors.forget(face.track_id for face in tracked)
        return faces, self._events(faces, timestamp_s)

    def _events(self, faces: list[dict], now: float) -> list[dict]:
        events, time_s = [], round(now, 3)
        for face in faces:
            track_id, state = face["track_id"], face["monitor"]
            for event in state["new_events"]:
                events.append({"type": event["type"], "time_s": event["end_s"], "track_id": track_id,
                               **{k: v for k, v in event.items() if k != "type"}})
            if state["drowsy"] and track_id not in self._drowsy_since:
                self._drowsy_since[track_id] = now
                events.append({"type": "drowsy", "time_s": time_s, "track_id": track_id,
                               "perclos": state["perclos"], "eyes_closed": state["eyes_closed"],
                               "long_closures": state["long_closures"]})
            elif not state["drowsy"] and track_id in self._drowsy_since:
                since = self._drowsy_since.pop(track_id)
                events.append({"type": "drowsy_end", "time_s": time_s, "track_id": track_id,
                               "drowsy_s": round(now - since, 3)})
        seen = {face["track_id"] for face in faces}
        for track_id in [t for t in self._drowsy_since if t not in seen]:
            del self._drowsy_since[track_id]  # the track ended: its face is a new one if it comes back
        if faces:
            if self._no_face_sent:
                events.append({"type": "face_back", "time_s": time_s,
                               "absent_s": round(now - (self._last_face_s or self._start_s), 3)})
            self._no_face_sent, self._last_face_s = False, now
        else:
            since = self._start_s if self._last_face_s is None else self._last_face_s
            if not self._no_face_sent and now - since >= self.no_face_s:
                self._no_face_sent = True
                events.append({"type": "no_face", "time_s": time_s, "since_s": round(since, 3)})
        return events

    def annotate(self, frame_bgr: np.ndarray, faces: list[dict]) -> np.ndarray:
        """The frame with each face's points, measures, monitor lines and track id."""
        annotated = face_measures.draw_measures(predict.draw_landmarks(frame_bgr, faces), faces,
                                                self.face_monitors.summary_lines(faces))
        for face in faces:
            x, y = face["box"][:2]
            cv2.putText(annotated, str(face["track_id"]), (round(x), round(y) - 4),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 160, 0), 2)
        return annotated


def event_text(event: dict) -> str:
    """An event as a console line."""
    kind, time_s = event["type"], event["time_s"]
    if kind in ("blink", "long_closure", "yawn"):
        return face_measures.event_text(event["track_id"], event)
    if kind == "drowsy":
        perclos = "-" if event["perclos"] is None else f"{100 * event['perclos']:.0f} %"
        return f"face {event['track_id']}: DROWSY at {time_s:.2f} s (PERCLOS {perclos})"
    if kind == "drowsy_end":
        return f"face {event['track_id']}: no longer drowsy at {time_s:.2f} s (after {event['drowsy_s']:.1f} s)"
    if kind == "no_face":
        return f"no face since {event['since_s']:.2f} s (at {time_s:.2f} s)"
    return f"a face again at {time_s:.2f} s (after {event['absent_s']:.1f} s without)"


# ---------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------

class OutputError(InputError):
    """An output file could not be written; the message names it."""


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


class JsonLog:
    """JSON Lines written whole: a line that cannot be written in full (a full disk) is cut
    off again, so the file always ends with a complete line. The file is opened on the first
    line, so a run that has nothing to write leaves an earlier run's file as it was.

    ``append``: add to an existing file (a camera's log across restarts) instead of
    replacing it. ``max_bytes`` (0: no limit): before a line would take the file over it,
    the file becomes ``<name>.1`` (replacing the one before) and a new one starts: at most
    twice ``max_bytes`` on disk.
    """

    def __init__(self, path: Path, append: bool = False, max_bytes: int = 0):
        self.path, self.append, self.max_bytes = Path(path), append, max_bytes
        self.lines = 0
        self._file = None
        self._size = 0

    def write(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode()
        try:
            if self._file is None:
                self._open("ab" if self.append else "wb")
            elif self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._file.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._open("wb")
            self._write_whole(data)
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write ({err.strerror or err})") from None
        self.lines += 1

    def _open(self, mode: str) -> None:
        self._file = open(self.path, mode, buffering=0)  # noqa: SIM115 - kept open across lines
        self._size = self._file.seek(0, os.SEEK_END)
        if self._size:  # appending to a file cut mid-line (power lost): start a new line
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    self._write_whole(b"\n")

    def _write_whole(self, data: bytes) -> None:
        start, done = self._size, 0
        try:
            while done < len(data):
                done += self._file.write(memoryview(data)[done:])
        except OSError:
            try:
                os.ftruncate(self._file.fileno(), start)
                self._file.seek(start)
            except OSError:
                pass
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def letterbox(image: np.ndarray, size_wh) -> np.ndarray:
    """``image`` scaled to fit ``size_wh`` whole, centred on black."""
    width, height = size_wh
    scale = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    canvas[y:y + new_h, x:x + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


class VideoRecorder:
    """The annotated frames as an .mp4, opened on the first frame (its size is the video's).
    A frame of another size (a camera or stream that renegotiates) is scaled into the
    video's size, with a note, instead of being dropped by the encoder."""

    def __init__(self, path: Path, fps: float, source_name: str):
        self.path, self.fps, self.source_name = Path(path), fps, source_name
        self.frames = 0
        self.size: tuple | None = None
        self._writer = None
        self._last_size: tuple | None = None

    def write(self, frame_bgr: np.ndarray, frame_index: int) -> None:
        size = (frame_bgr.shape[1], frame_bgr.shape[0])
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self._writer.isOpened():
                self._writer = None
                raise OutputError(f"{self.path}: cannot write the video (is its folder writable?)")
            self.size = self._last_size = size
        if size != self._last_size:
            print(f"note: {self.source_name}: the frame size changed from {self._last_size[0]}x"
                  f"{self._last_size[1]} to {size[0]}x{size[1]} at frame {frame_index}; "
                  f"{self.path.name} stays {self.size[0]}x{self.size[1]} (frames scaled to fit)",
                  file=sys.stderr)
            self._last_size = size
        self._writer.write(frame_bgr if size == self.size else letterbox(frame_bgr, self.size))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # what was written stays a playable video
            self._writer = None


def unused_stem(out_dir: Path, base: str, suffixes, inputs=()) -> Path:
    """``out_dir/base``, or ``base-2``, ``base-3``... the first for which no output (``base``
    plus each suffix) exists already or is one of the ``inputs``: a run never replaces what
    an earlier run wrote, nor its own input."""
    inputs = {os.path.realpath(p) for p in inputs}
    number = 1
    while True:
        stem = out_dir / (base if number == 1 else f"{base}-{number}")
        outputs = [Path(f"{stem}{suffix}") for suffix in suffixes]
        if not any(path.exists() or path.is_symlink() or os.path.realpath(path) in inputs for path in outputs):
            return stem
        number += 1


# ---------------------------------------------------------------------------------------
# The command run on events
# ---------------------------------------------------------------------------------------

DEFAULT_HOOK_TYPES = ("drowsy", "long_closure", "yawn", "no_face")


class EventHook:
    """Runs a shell command for each event, in a thread of its own, so the frame loop never
    waits for it. The event goes to the command as one JSON line on its standard input and
    in the environment (``LANDMARKS_EVENT``: the JSON, ``LANDMARKS_EVENT_TYPE``: its type).

    Only the event ``types`` asked for run it, and each type at most once per ``every_s``
    seconds; while the command still runs, at most ``queue_size`` events wait and later
    ones are dropped (counted). A command that fails or runs past ``timeout_s`` (it is then
    killed, with everything it started) is reported on stderr; the monitor goes on.
    """

    def __init__(self, command: str, types=DEFAULT_HOOK_TYPES, every_s: float = 10.0,
                 timeout_s: float = 10.0, queue_size: int = 4):
        self.command, self.types = command, frozenset(types)
        self.every_s, self.timeout_s = every_s, timeout_s
        self.counts = {"run": 0, "failed": 0, "rate_limited": 0, "dropped": 0}
        self._last_sent: dict = {}
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._work, name="on-event", daemon=True)
        self._thread.start()

    def offer(self, event: dict) -> bool:
        """Queue the event for the command (never waits); False if it was not queued."""
        kind = event.get("type")
        if kind not in self.types:
            return False
        now = time.monotonic()
        if now - self._last_sent.get(kind, -math.inf) < self.every_s:
            self.counts["rate_limited"] += 1
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.counts["dropped"] += 1
            print(f"warning: --on-event: the command is still busy; {kind} event dropped", file=sys.stderr)
            return False
        self._last_sent[kind] = now
        return True

    @property
    def waiting(self) -> int:
        """Events queued, not yet given to the command."""
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._run(event)

    def _run(self, event: dict) -> None:
        text = json.dumps(event)
        env = {**os.environ, "LANDMARKS_EVENT": text, "LANDMARKS_EVENT_TYPE": event["type"]}
        try:
            # A session of its own: a command that hangs is killed with all it started.
            process = subprocess.Popen(self.command, shell=True, stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                       start_new_session=True)
        except OSError as err:
            self.counts["failed"] += 1
            print(f"warning: --on-event: cannot run {self.command!r} ({err.strerror})", file=sys.stderr)
            return
        try:
            _, stderr = process.communicate(text.encode() + b"\n", timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
            process.communicate()
            self.counts["failed"] += 1
            print(f"warning: --on-event: {self.command!r} ran over {self.timeout_s:g} s on a "
                  f"{event['type']} event and was stopped", file=sys.stderr)
            return
        self.counts["run"] += 1
        if process.returncode != 0:
            self.counts["failed"] += 1
            last = (stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            print(f"warning: --on-event: {self.command!r} exited with status {process.returncode} "
                  f"on a {event['type']} event" + (f": {last[0][:300]}" if last else ""), file=sys.stderr)

    def close(self, wait_s: float = 0.0) -> None:
        """Stop taking events; wait up to ``wait_s`` for those queued to be run."""
        try:
            self._queue.put(None, timeout=max(wait_s, 0.01))
        except queue.Full:
            return
        self._thread.join(wait_s)


# ---------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------

@dataclass
class OutputOptions:
    """What a run writes and runs; None: the default for the source (file or camera)."""
    log: str | None = None  # "frames" (one line per frame) or "events"; files: frames, cameras: events
    log_max_mb: float | None = None  # rotate the log past this; files: no limit, cameras: 20
    record: bool = False  # a camera's annotated video (a file's is written unless --no-draw)
    min_free_mb: float = 100.0  # stop writing when the output folder's disk has less free
    no_face_s: float = 5.0
    camera_size: tuple = DEFAULT_CAMERA_SIZE
    on_event: str | None = None
    on_event_types: tuple = DEFAULT_HOOK_TYPES
    on_event_every_s: float = 10.0
    on_event_timeout_s: float = 10.0


CAMERA_LOG_MAX_MB = 20.0


def _number(wanted: str, test):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"wants a number {wanted}, got {text!r}")
        return value
    return parse


def event_types(text: str) -> tuple:
    kinds = tuple(kind.strip() for kind in text.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in EVENT_TYPES]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"wants event types from {', '.join(EVENT_TYPES)} "
                                         f"separated by commas, got {text!r}")
    return kinds


def add_flags(parser: argparse.ArgumentParser, live: bool = False) -> None:
    """The monitor's flags (predict.py --video; app.py --camera with ``live``)."""
    group = parser.add_argument_group("monitor (video and cameras; docs/monitor.md)")
    if not live:
        group.add_argument("--log", choices=("frames", "events"),
                           help="what the log holds: a line per frame, or the events only "
                           "(default: frames for a file, events for a camera)")
        group.add_argument("--log-max-mb", type=_number("at least 0", lambda v: v >= 0),
                           help="past this size the log becomes <name>.1 and a new one starts; 0: no "
                           f"limit (default: none for a file, {CAMERA_LOG_MAX_MB:g} for a camera)")
        group.add_argument("--record", action="store_true",
                           help="keep the annotated video of a camera (a file's is written unless --no-draw)")
        group.add_argument("--min-free-mb", type=_number("at least 0", lambda v: v >= 0), default=100.0,
                           help="stop writing when the output folder's disk has less free (default: 100)")
    group.add_argument("--camera-size", type=frame_size, default=DEFAULT_CAMERA_SIZE,
                       help="picture size asked of a camera (default: 640x480)")
    group.add_argument("--no-face-s", type=_number("above 0", lambda v: v > 0), default=5.0,
                       help="a no_face event after this many seconds without a face (default: 5)")
    group.add_argument("--on-event", metavar="CMD",
                       help="shell command run for each event, the event as JSON on its stdin and in "
                       "$LANDMARKS_EVENT")
    group.add_argument("--on-event-types", type=event_types, default=DEFAULT_HOOK_TYPES,
                       help=f"events that run it (default: {','.join(DEFAULT_HOOK_TYPES)}; all: "
                       f"{','.join(EVENT_TYPES)})")
    group.add_argument("--on-event-every", dest="on_event_every_s", type=_number("at least 0", lambda v: v >= 0),
                       default=10.0, help="run it at most once per this many seconds per event type (default: 10)")
    group.add_argument("--on-event-timeout", dest="on_event_timeout_s", type=_number("above 0", lambda v: v > 0),
                       default=10.0, help="stop a command still running after this many seconds (default: 10)")


def options_from_args(args: argparse.Namespace) -> OutputOptions:
    names = [name for name in OutputOptions.__dataclass_fields__ if hasattr(args, name)]
    return OutputOptions(**{name: getattr(args, name) for name in names})


def check_flags(parser: argparse.ArgumentParser, *options) -> None:
    """parser.error (exit 2) naming the first flag out of range among the tracking and
    blink options (config.option_problems), or the hysteresis thresholds the wrong way round."""
    problems = [problem for option in options for problem in config.option_problems(option)]
    for option in options:
        if isinstance(option, face_measures.BlinkOptions) and not problems:
            if option.ear_open < option.ear_close:
                problems.append(f"--ear-open {option.ear_open} is below --ear-close {option.ear_close}")
            if option.mar_yawn_end > option.mar_yawn:
                problems.append(f"--mar-yawn-end {option.mar_yawn_end} is above --mar-yawn {option.mar_yawn}")
            if option.min_window_s > option.window_s:
                problems.append(f"--min-window-s {option.min_window_s} is above --window-s {option.window_s}")
    if problems:
        parser.error(problems[0])


def nonnegative_int(text: str) -> int:
    if not (text.isdigit()):
        raise argparse.ArgumentTypeError(f"wants a whole number of at least 0, got {text!r}")
    return int(text)


def make_hook(options: OutputOptions) -> EventHook | None:
    if not options.on_event:
        return None
    return EventHook(options.on_event, options.on_event_types, options.on_event_every_s,
                     options.on_event_timeout_s)


# ---------------------------------------------------------------------------------------
# predict.py --video
# ---------------------------------------------------------------------------------------

class StopSignals:
    """While it is in place (main thread only), SIGTERM (systemctl stop) and SIGINT (Ctrl+C)
    only set ``received`` (the signal's name): the frame loop ends at the next frame and
    closes its files, so a recording stays playable and the log whole. A second signal acts
    as usual (Ctrl+C twice stops a read that hangs)."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        self.received = signal.Signals(number).name
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


def run_video(source_spec: str, model, detector, out_dir: Path, max_frames: int = 0, draw: bool = True,
              tracker_options: tracking.TrackerOptions | None = None,
              measure_options: face_measures.MeasureOptions | None = None,
              blink_options: face_measures.BlinkOptions | None = None,
              options: OutputOptions | None = None) -> int:
    """Track the faces of a video file or camera and write what ``options`` asks (see the
    module's docstring and docs/json_schema.md); print each event, frames/s and the time
    split. Exit status as predict.py's: 2 when the source cannot be read (or stops early)
    or an output cannot be written, with the frames done kept in playable files."""
    options = options or OutputOptions()
    try:
        source = open_source(source_spec, options.camera_size)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    camera = source.is_camera
    log_kind = options.log or ("events" if camera else "frames")
    log_max_mb = options.log_max_mb if options.log_max_mb is not None else (CAMERA_LOG_MAX_MB if camera else 0)
    record = draw and (options.record or not camera)
    try:
        predict.make_output_folder(out_dir, "--out")
    except InputError as err:
        source.release()
        print(f"error: {err}", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    inputs = [] if camera else [source_spec]
    if camera:  # one log, appended to across restarts; each run's video gets a name of its own
        log_path = out_dir / f"{source.stem}_{'landmarks' if log_kind == 'frames' else 'events'}.jsonl"
        video_path = Path(f"{unused_stem(out_dir, f'{source.stem}_landmarks', ('.mp4',))}.mp4")
    else:
        suffixes = (".jsonl",) + ((".mp4",) if record else ())
        stem = unused_stem(out_dir, f"{source.stem}_landmarks", suffixes, inputs)
        log_path, video_path = Path(f"{stem}.jsonl"), Path(f"{stem}.mp4")
        if log_kind == "events":
            log_path = Path(f"{unused_stem(out_dir, f'{source.stem}_events', ('.jsonl',), inputs)}.jsonl")
    log = JsonLog(log_path, append=camera, max_bytes=int(log_max_mb * 1e6))
    recorder = VideoRecorder(video_path, source.fps, source.name) if record else None
    monitor = Monitor(model, detector, tracker_options, measure_options, blink_options, options.no_face_s)
    hook = make_hook(options)

    frames = with_face = 0
    track_ids: set = set()
    read_s = measure_s = draw_s = 0.0
    output_error, stopped = None, "end"
    stop_signal = StopSignals()
    started = time.perf_counter()
    try:
        while not max_frames or frames < max_frames:
            if stop_signal.received:
                stopped = "signal"
                break
            tick = time.perf_counter()
            frame = source.read()
            read_s += time.perf_counter() - tick
            if frame is None:
                break
            timestamp = time.perf_counter() - started if camera else frames / source.fps
            tick, model_s = time.perf_counter(), sum(monitor.tracker.timings.values())
            faces, events = monitor.process(frame, timestamp)
            measure_s += time.perf_counter() - tick - (sum(monitor.tracker.timings.values()) - model_s)
            for event in events:
                print(event_text(event), flush=camera)
                if hook is not None:
                    hook.offer(event)
            track_ids.update(face["track_id"] for face in faces)
            with_face += bool(faces)
            if output_error is None:
                try:
                    if frames % 30 == 0 and free_bytes(out_dir) < options.min_free_mb * 1e6:
                        raise OutputError(f"{out_dir}: less than {options.min_free_mb:g} MB free on its disk "
                                          "(--min-free-mb)")
                    wall = datetime.now(timezone.utc).isoformat(timespec="milliseconds") if camera else None
                    if log_kind == "frames":
                        line = {"frame": frames, "time_s": round(timestamp, 4), "width": frame.shape[1],
                                "height": frame.shape[0], "faces": faces, "events": events}
                        log.write({**line, "at": wall} if camera else line)
                    else:
                        for event in events:
                            log.write({**event, "frame": frames, **({"at": wall} if camera else {})})
                    if recorder is not None:
                        tick = time.perf_counter()
                        recorder.write(monitor.annotate(frame, faces), frames)
                        draw_s += time.perf_counter() - tick
                except OutputError as err:
                    output_error = err
                    print(f"error: {err}; stopped writing, what was written is kept"
                          + ("; the monitor goes on" if camera else ""), file=sys.stderr, flush=True)
            frames += 1
            if output_error is not None and not camera:
                break
        else:
            stopped = "max_frames"
    except KeyboardInterrupt:  # a second Ctrl+C, while a read was stuck
        stopped = "signal"
    finally:  # whatever stops the loop, what was written stays playable and whole
        stop_signal.restore()
        source.release()
        log.close()
        if recorder is not None:
            recorder.close()
        if hook is not None:
            hook.close(wait_s=options.on_event_timeout_s)
    elapsed = time.perf_counter() - started
    if frames == 0:
        print(f"error: {source.name}: no frames could be read", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    timings = monitor.tracker.timings
    per_frame = {name: 1000 * seconds / frames for name, seconds in
                 (("read", read_s), ("detect", timings["detect"]), ("landmarks", timings["landmarks"]),
                  ("measures", measure_s), ("draw", draw_s))}
    print(f"{source.name}: {frames} frames, a face in {with_face}, {len(track_ids)} track(s), "
          f"{frames / elapsed:.1f} frames/s; ms per frame: "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in per_frame.items())
          + f" (detector ran on {monitor.tracker.detector_calls} frames)")
    written = [str(path) for path, lines in ((log.path, log.lines),) if lines] + \
        ([str(recorder.path)] if recorder is not None and recorder.frames else [])
    if written:
        print("wrote " + " and ".join(written))
    if output_error is not None:
        return predict.EXIT_BAD_INPUT
    if stopped == "signal":
        print(f"{source.name}: stopped ({stop_signal.received or 'interrupted'}) after {frames} frames; "
              "the files are closed and whole")
        return predict.EXIT_OK if with_face else predict.EXIT_NO_FACE
    if camera and stopped == "end":
        print(f"error: {source.name}: stopped delivering frames after {frames} (unplugged?)", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    # The frame count of some containers is an estimate from the duration: allow one frame.
    expected = source.frame_count
    if expected and frames < expected - 1 and not (max_frames and frames >= max_frames):
        print(f"error: {source_spec}: the video ended after {frames} of its {expected} frames "
              f"(truncated or corrupt); the frames done were written", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    return predict.EXIT_OK if with_face else predict.EXIT_NO_FACE
