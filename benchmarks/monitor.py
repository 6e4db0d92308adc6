"""What the drowsiness monitor costs when left running: the blink monitor's time per frame
as the hours pass, the live page's frames/s with its viewers, and memory over a long run.

    python -m benchmarks.monitor                      # all three, on the Yale faces in ../shared/data
    python -m benchmarks.monitor --json

1. ``BlinkMonitor.update`` (one face, a blink every 3 s at 30 frames/s): microseconds per
   update in the first simulated minute and after each simulated hour.
2. The live path (live.py, what ``app.py --camera`` runs): one thread reads a 640x480 clip
   (a real face, eyes shutting for 3 s in every 12), tracks, measures, draws and encodes a
   JPEG per frame, as fast as it can; 1 and 3 viewers read the MJPEG stream over HTTP.
   Frames/s over ``--seconds``.
3. Memory: the process's resident size while monitor.Monitor processes the same clip for
   ``--soak-frames`` frames.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import sys
import threading
import time
from pathlib import Path

import cv2

import app as app_module
import face_measures
import live
import monitor
import predict

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
SUBJECT = "subject03"


def blink_monitor_cost(hours: int, fps: float = 30.0) -> list[dict]:
    """Microseconds per update in the first minute and in the last minute of each hour."""
    blink = face_measures.BlinkMonitor()
    rows, frame = [], 0
    for hour in range(hours + 1):
        end = int(3600 * hour * fps) + int(60 * fps) if hour == 0 else int(3600 * hour * fps)
        timed_from = end - int(60 * fps)
        started = None
        while frame < end:
            if frame == timed_from:
                started = time.perf_counter()
            t = frame / fps
            ear = 0.1 if 1.0 <= t % 3 < 1.2 else 0.3
            blink.update(t, ear, ear, 0.0)
            frame += 1
        rows.append({"hours": hour if hour else 1 / 60, "us_per_update": 1e6 * (time.perf_counter() - started)
                     / (end - timed_from), "blinks": blink.count("blink"), "events_held": len(blink.events)})
    return rows


def make_clip(data_dir: Path, path: Path, size=(640, 480), fps: float = 30.0) -> Path:
    """12 s of a real face at ``size`` (letterboxed): eyes open 3 s, shut 3 s, open 6 s."""
    folder = data_dir / "yale_eyes"
    eyes_open = monitor.letterbox(cv2.imread(str(folder / "open" / f"{SUBJECT}_normal.png")), size)
    shut = monitor.letterbox(cv2.imread(str(folder / "closed" / f"{SUBJECT}_sleepy.png")), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for frame in [eyes_open] * int(3 * fps) + [shut] * int(3 * fps) + [eyes_open] * int(6 * fps):
        writer.write(frame)
    writer.release()
    return path


def viewer(port: int, stop: threading.Event, counts: list, index: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/live/stream.mjpg")
    response = connection.getresponse()
    while not stop.is_set():
        line = response.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            response.readline()
            response.read(length)
            counts[index] += 1
    response.close()


def live_fps(clip: Path, viewers: int, seconds: float) -> dict:
    from werkzeug.serving import make_server

    watcher = live.LiveMonitor(str(clip), predict.LandmarkModel(threads=1), predict.make_detector(), realtime=False)
    server = make_server("127.0.0.1", 0, app_module.create_app(live=watcher), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop, counts = threading.Event(), [0] * viewers
    threads = [threading.Thread(target=viewer, args=(server.port, stop, counts, i), daemon=True)
               for i in range(viewers)]
    for thread in threads:
        thread.start()
    watcher.start()
    time.sleep(2.0)  # warm up
    frames_before, counts_before, started = watcher.frames, list(counts), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    frames = watcher.frames - frames_before
    received = [c - b for c, b in zip(counts, counts_before)]
    stop.set()
    watcher.stop()
    server.shutdown()
    return {"viewers": viewers, "frames_per_s": frames / elapsed,
            "received_per_s_per_viewer": [round(r / elapsed, 1) for r in received]}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def soak(clip: Path, frames: int) -> list[dict]:
    watcher = monitor.Monitor(predict.LandmarkModel(threads=1), predict.make_detector())
    capture, rows = cv2.VideoCapture(str(clip)), []
    for index in range(frames):
        ok, frame = capture.read()
        if not ok:
            capture.open(str(clip))
            ok, frame = capture.read()
        faces, _ = watcher.process(frame, index / 30.0)
        watcher.annotate(frame, faces)
        if index % (frames // 5) == 0 or index == frames - 1:
            rows.append({"frame": index + 1, "video_min": round((index + 1) / 30 / 60, 1), "rss_mb": round(rss_mb(), 1)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitor", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="folder holding yale_eyes/")
    parser.add_argument("--hours", type=int, default=4, help="simulated hours for the blink monitor")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds timed per live run")
    parser.add_argument("--soak-frames", type=int, default=9000, help="frames of the memory run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(args.data_dir), Path(folder) / "face640.avi")
        results = {"blink_monitor": blink_monitor_cost(args.hours),
                   "live": [live_fps(clip, viewers, args.seconds) for viewers in (1, 3)],
                   "soak": soak(clip, args.soak_frames)}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| simulated hours | us per BlinkMonitor.update | blinks | events held |\n| --- | --- | --- | --- |")
    for row in results["blink_monitor"]:
        print(f"| {row['hours']:.2g} | {row['us_per_update']:.1f} | {row['blinks']} | {row['events_held']} |")
    print("\n| viewers | frames/s (640x480, tracking + JPEG) | received per viewer, frames/s |\n| --- | --- | --- |")
    for row in results["live"]:
        print(f"| {row['viewers']} | {row['frames_per_s']:.1f} | {', '.join(map(str, row['received_per_s_per_viewer']))} |")
    print("\n| frames | minutes of 30 frames/s video | resident memory, MB |\n| --- | --- | --- |")
    for row in results["soak"]:
        print(f"| {row['frame']} | {row['video_min']} | {row['rss_mb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
