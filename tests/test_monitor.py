"""The drowsiness monitor (monitor.py, predict.py --video): sources, outputs that neither
replace earlier runs' nor grow without bound, the event command, and the flags.

Real faces: the Yale photos of one person with eyes open and closed (shared/data/yale_eyes),
made into clips in a temporary folder (never committed). The Pi camera is a stand-in
Picamera2 class that serves a video file's frames as picamera2 does.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import face_measures
import monitor
import predict
from conftest import REPO_DIR, read_video, require_data

FPS = 10
SUBJECT = "subject03"  # EAR 0.31 with eyes open, 0.16 shut (benchmarks/eyes.py)


@pytest.fixture(scope="module")
def model():
    return predict.LandmarkModel(predict.DEFAULT_MODEL, threads=1)


@pytest.fixture(scope="module")
def yale_photos(data_dir):
    folder = require_data(data_dir / "yale_eyes", "yale_eyes")
    return (cv2.imread(str(folder / "open" / f"{SUBJECT}_normal.png")),
            cv2.imread(str(folder / "closed" / f"{SUBJECT}_sleepy.png")))


def write_clip(path: Path, frames, fps: float = FPS) -> Path:
    """Frames as an MJPG .avi (every frame a key frame: exact frame counts)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def closure_clip(path: Path, yale_photos, open_s=3.0, shut_s=3.0, after_s=6.0) -> Path:
    """Eyes open, then shut for ``shut_s`` seconds, then open again."""
    eyes_open, shut = yale_photos
    return write_clip(path, [eyes_open] * int(open_s * FPS) + [shut] * int(shut_s * FPS)
                      + [eyes_open] * int(after_s * FPS))


def run_predict(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "predict.py", *map(str, argv)], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


# ---------------------------------------------------------------------------------------
# The Pi camera, by a stand-in
# ---------------------------------------------------------------------------------------

class StandInPicamera2:
    """picamera2.Picamera2 as the monitor uses it, serving the frames of ``video`` at the
    configured size (or at ``sizes[i]`` for frame i: a camera that renegotiates) and frame
    rate, in libcamera's RGB888 layout (B, G, R, as OpenCV). Past the file's end
    capture_array raises, as picamera2 does when the camera stops answering."""

    video: Path | None = None
    sizes = None
    opened: list = []
    paced = True  # frames come at the frame rate; False: as fast as they are taken
    loops = 1  # plays the file this many times
    on_frame = None  # called with the frame's index before it is served

    def __init__(self, camera_num=0):
        if self.video is None or camera_num != 0:
            raise IndexError("list index out of range")  # what picamera2 says with no camera
        self.capture = cv2.VideoCapture(str(self.video))
        self.size, self.frames, self.running = None, 0, False
        type(self).opened.append(self)

    def create_video_configuration(self, main=None, controls=None):
        return {"main": dict(main), "controls": dict(controls or {})}

    def configure(self, configuration):
        assert configuration["main"]["format"] == "RGB888"
        self.size = tuple(configuration["main"]["size"])
        self.frame_rate = configuration["controls"]["FrameRate"]

    def start(self):
        self.running, self.started = True, time.monotonic()

    def capture_array(self, name="main"):
        assert self.running and name == "main"
        if self.paced:
            time.sleep(max(0.0, self.started + self.frames / self.frame_rate - time.monotonic()))
        if type(self).on_frame is not None:  # read from the class: a plain function, not a method
            type(self).on_frame(self.frames)
        ok, frame = self.capture.read()
        if not ok and self.loops > 1:
            self.loops -= 1
            self.capture.open(str(self.video))
            ok, frame = self.capture.read()
        if not ok:
            raise RuntimeError("Camera frontend has timed out!")
        size = self.sizes[self.frames] if self.sizes else self.size
        self.frames += 1
        return cv2.resize(frame, size)

    def stop(self):
        self.running = False

    def close(self):
        self.capture.release()


@pytest.fixture
def picamera2(monkeypatch):
    """A stand-in picamera2 module: set ``.Picamera2.video`` to the file it films."""
    module = types.ModuleType("picamera2")
    camera_class = type("Picamera2", (StandInPicamera2,), {"opened": []})
    module.Picamera2 = camera_class
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return module


def test_the_pi_camera_is_read_through_picamera2(model, yale_photos, picamera2, tmp_path, capsys):
    picamera2.Picamera2.video = closure_clip(tmp_path / "scene.avi", yale_photos)
    out = tmp_path / "out"
    code = predict.main(["--video", "picamera2", "--out", str(out), "--camera-size", "320x240",
                         "--max-frames", "90"])
    captured = capsys.readouterr()
    assert code == predict.EXIT_OK, captured.err
    camera = picamera2.Picamera2.opened[0]
    assert camera.size == (320, 240) and camera.frames == 90 and not camera.running  # stopped at the end
    # A camera: events only, and no video unless --record.
    assert sorted(p.name for p in out.iterdir()) == ["picamera2_events.jsonl"]
    events = [json.loads(line) for line in (out / "picamera2_events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["drowsy", "long_closure"]
    assert events[0]["track_id"] == 0 and "at" in events[0]  # the wall-clock time
    assert "face 0: DROWSY at" in captured.out


def test_without_picamera2_the_error_says_how_to_get_it(model, monkeypatch, tmp_path):
    import importlib.util

    installed = importlib.util.find_spec("picamera2") is not None
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(predict.InputError, match="python3-picamera2.*--system-site-packages"):
        monitor.open_source("picamera2")
    if installed:
        pytest.skip("picamera2 is installed here: predict.py would open the real camera")
    result = run_predict("--video", "picamera2", "--out", tmp_path / "out")
    assert result.returncode == predict.EXIT_BAD_INPUT
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [monitor.PICAMERA2_MISSING.join(("error: ", ""))] and "Traceback" not in result.stderr


def test_a_camera_that_is_not_there_is_named(picamera2):
    with pytest.raises(predict.InputError, match=r"picamera2:1: cannot open the camera .*IndexError"):
        monitor.open_source("picamera2:1")
    with pytest.raises(predict.InputError, match="camera number"):
        monitor.open_source("picamera2:x")


def test_a_camera_unplugged_mid_run_keeps_what_was_written(model, yale_photos, picamera2, tmp_path, capsys):
    """The stand-in camera stops answering after the clip's 120 frames: a clear message,
    exit 2, and the log and the recording are whole."""
    picamera2.Picamera2.video = closure_clip(tmp_path / "scene.avi", yale_photos)
    out = tmp_path / "out"
    code = predict.main(["--video", "picamera2", "--out", str(out), "--record", "--log", "frames"])
    err = capsys.readouterr().err
    assert code == predict.EXIT_BAD_INPUT
    assert "error: picamera2: stopped delivering frames after 120 (unplugged?)" in err
    lines = (out / "picamera2_landmarks.jsonl").read_text().splitlines()
    assert len(lines) == 120 and json.loads(lines[-1])["frame"] == 119
    assert len(read_video(out / "picamera2_landmarks.mp4")) == 120


def test_a_frame_size_change_mid_stream_keeps_every_frame(model, yale_photos, picamera2, tmp_path, capsys):
    picamera2.Picamera2.video = closure_clip(tmp_path / "scene.avi", yale_photos, 2.0, 1.0, 3.0)
    picamera2.Picamera2.sizes = [(320, 240)] * 15 + [(640, 480)] * 45
    out = tmp_path / "out"
    code = predict.main(["--video", "picamera2", "--out", str(out), "--record", "--log", "frames",
                         "--max-frames", "60"])
    err = capsys.readouterr().err
    assert code == predict.EXIT_OK, err
    assert "the frame size changed from 320x240 to 640x480 at frame 15" in err
    written = read_video(out / "picamera2_landmarks.mp4")
    assert len(written) == 60 and all(frame.shape == (240, 320, 3) for frame in written)
    records = [json.loads(line) for line in (out / "picamera2_landmarks.jsonl").read_text().splitlines()]
    assert [(r["width"], r["height"]) for r in records] == [(320, 240)] * 15 + [(640, 480)] * 45
    # The face is found again in the larger picture, its points in that picture's pixels.
    late = [r["faces"][0]["landmarks"] for r in records[20:] if r["faces"]]
    assert late and max(max(x for x, _ in points) for points in late) > 320


# ---------------------------------------------------------------------------------------
# Outputs: earlier runs, full and read-only folders
# ---------------------------------------------------------------------------------------

def test_a_second_run_never_replaces_the_first_runs_outputs(model, yale_photos, tmp_path):
    (tmp_path / "d1").mkdir()
    first = closure_clip(tmp_path / "d1" / "talk.avi", yale_photos, 1.0, 0.5, 1.0)
    out = tmp_path / "o"
    assert predict.main(["--video", str(first), "--out", str(out)]) == predict.EXIT_OK
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["talk_landmarks.jsonl", "talk_landmarks.mp4"]

    # d2/talk.avi holds no frame; then a model that fails on the first frame.
    (tmp_path / "d2").mkdir()
    empty = tmp_path / "d2" / "talk.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 243)).release()
    assert predict.main(["--video", str(empty), "--out", str(out)]) == predict.EXIT_BAD_INPUT

    class BrokenModel:
        path = Path("broken.tflite")

        def predict_face(self, image, box_xywh, roll_deg=0.0):
            raise predict.ModelOutputError(self.path, "the model output non-finite coordinates")

    with pytest.raises(predict.ModelOutputError):
        predict.run_video(str(first), BrokenModel(), predict.make_detector(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # A second video of the same name gets names of its own, as images do.
    second = closure_clip(tmp_path / "d2" / "talk.avi", yale_photos, 1.0, 0.0, 1.0)
    assert predict.main(["--video", str(second), "--out", str(out), "--max-frames", "5"]) == predict.EXIT_OK
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert len((out / "talk_landmarks-2.jsonl").read_text().splitlines()) == 5
    assert len(read_video(out / "talk_landmarks-2.mp4")) == 5


def test_max_frames_below_zero_is_refused(tmp_path):
    result = run_predict("--video", tmp_path / "any.avi", "--max-frames", "-5", "--out", tmp_path)
    assert result.returncode == 2 and "--max-frames: wants a whole number of at least 0, got '-5'" in result.stderr


def ignore_sigxfsz_and_limit(limit_bytes: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return limit


def test_a_full_disk_leaves_a_log_of_whole_lines(yale_photos, tmp_path):
    """Files may grow to 30 KB only (RLIMIT_FSIZE: writes fail as on a full disk): the
    log stops at its last whole line, with a message naming it, and exit 2."""
    clip = closure_clip(tmp_path / "talk.avi", yale_photos, 2.0, 0.0, 0.0)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, "predict.py", "--video", str(clip), "--out", str(out), "--no-draw"],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300,
                            preexec_fn=ignore_sigxfsz_and_limit(30_000))
    assert result.returncode == predict.EXIT_BAD_INPUT, result.stderr
    log = out / "talk_landmarks.jsonl"
    assert f"error: {log}: cannot write (File too large); stopped writing" in result.stderr
    assert "Traceback" not in result.stderr
    text = log.read_text()
    assert text.endswith("\n") and 0 < len(text) <= 30_000
    assert [json.loads(line)["frame"] for line in text.splitlines()] == list(range(len(text.splitlines())))


def test_low_free_space_stops_the_video_while_it_can_still_be_closed(model, yale_photos, tmp_path,
                                                                     monkeypatch, capsys):
    clip = closure_clip(tmp_path / "talk.avi", yale_photos, 6.0, 0.0, 0.0)
    free = iter([10**12, 50 * 10**6])  # checked every 30 frames: at frames 0 and 30
    monkeypatch.setattr(monitor, "free_bytes", lambda folder: next(free))
    out = tmp_path / "out"
    assert predict.main(["--video", str(clip), "--out", str(out)]) == predict.EXIT_BAD_INPUT
    assert f"error: {out}: less than 100 MB free on its disk (--min-free-mb)" in capsys.readouterr().err
    assert len((out / "talk_landmarks.jsonl").read_text().splitlines()) == 30
    assert len(read_video(out / "talk_landmarks.mp4")) == 30  # closed properly: playable


@contextlib.contextmanager
def read_only_folder(folder: Path):
    """A folder no file can be created in: a read-only tmpfs where this may mount one
    (root), else the folder's permissions (an ordinary user)."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1g", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("root without the right to mount: no folder is read-only to this test")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_output_folder_is_an_error_not_a_traceback(yale_photos, tmp_path):
    clip = closure_clip(tmp_path / "talk.avi", yale_photos, 1.0, 0.0, 0.0)
    with read_only_folder(tmp_path / "ro") as out:
        result = run_predict("--video", clip, "--out", out)
    assert result.returncode == predict.EXIT_BAD_INPUT
    assert f"error: {out / 'talk_landmarks.jsonl'}: cannot write (Read-only file system" in result.stderr \
        or f"error: {out / 'talk_landmarks.jsonl'}: cannot write (Permission denied" in result.stderr
    assert "Traceback" not in result.stderr


def test_stopping_the_service_leaves_a_playable_video_and_a_whole_log(yale_photos, tmp_path):
    """SIGTERM (systemctl stop) mid-run: the loop ends at the next frame and closes its
    files: the .mp4 plays, with as many frames as the log has lines."""
    clip = closure_clip(tmp_path / "talk.avi", yale_photos, 60.0, 0.0, 0.0)  # 600 frames
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "predict.py", "--video", str(clip), "--out", str(out)],
                               cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "talk_landmarks.jsonl"
    wait_until = time.monotonic() + 120
    while not (log.exists() and log.stat().st_size > 50_000) and time.monotonic() < wait_until:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == predict.EXIT_OK, stderr
    lines = log.read_text().splitlines()
    assert f"stopped (SIGTERM) after {len(lines)} frames; the files are closed and whole" in stdout
    assert 0 < len(lines) < 600 and "ended after" not in stderr
    assert len(read_video(out / "talk_landmarks.mp4")) == len(lines)


def test_a_camera_with_an_unwritable_log_folder_keeps_monitoring(model, yale_photos, picamera2, tmp_path,
                                                                  capsys):
    """From a camera, an output that cannot be written stops the writing, not the monitor:
    the events still come, on the console and to the event command."""
    picamera2.Picamera2.video = closure_clip(tmp_path / "scene.avi", yale_photos, 1.0, 3.0, 1.0)  # 1 s shut at 30/s
    seen = tmp_path / "seen.jsonl"
    with read_only_folder(tmp_path / "ro") as out:
        code = predict.main(["--video", "picamera2", "--out", str(out), "--max-frames", "50",
                             "--on-event", f"cat >> {seen}"])
    captured = capsys.readouterr()
    assert code == predict.EXIT_BAD_INPUT
    assert captured.err.count("error: ") == 1
    assert f"error: {out / 'picamera2_events.jsonl'}: cannot write (" in captured.err
    assert "stopped writing, what was written is kept; the monitor goes on" in captured.err
    assert "face 0: DROWSY at" in captured.out and "long closure" in captured.out
    assert [json.loads(line)["type"] for line in seen.read_text().splitlines()] == ["drowsy", "long_closure"]


def test_the_log_rotates_by_size_and_a_cut_line_is_not_continued(tmp_path):
    log = monitor.JsonLog(tmp_path / "x.jsonl", append=True, max_bytes=1000)
    for index in range(100):
        log.write({"frame": index, "pad": "x" * 40})
    log.close()
    current, older = (tmp_path / "x.jsonl").read_text(), (tmp_path / "x.jsonl.1").read_text()
    assert len(current) <= 1000 and len(older) <= 1000
    frames = [json.loads(line)["frame"] for line in (older + current).splitlines()]
    assert frames == list(range(100 - len(frames), 100))  # the newest lines, in order
    # A file cut mid-line (power lost while writing): the next run starts a new line.
    (tmp_path / "y.jsonl").write_text('{"frame": 1}\n{"fra')
    log = monitor.JsonLog(tmp_path / "y.jsonl", append=True)
    log.write({"frame": 2})
    log.close()
    assert (tmp_path / "y.jsonl").read_text().splitlines()[-1] == '{"frame": 2}'


def test_soak_a_camera_left_running_keeps_files_and_memory_bounded(model, yale_photos, picamera2, tmp_path,
                                                                    capsys):
    """3,000 frames from the stand-in camera (a 12 s clip with a 3 s eye closure, looped),
    the per-frame log rotated at 0.5 MB, a 2 s PERCLOS window that slides all the time:
    two log files of at most 0.5 MB each, the newest lines in order, and the memory the
    run holds (tracemalloc) the same after 3,000 frames as after 1,000."""
    import tracemalloc

    camera = picamera2.Picamera2
    camera.video = closure_clip(tmp_path / "scene.avi", yale_photos, 3.0, 3.0, 6.0)
    camera.paced, camera.loops = False, 26  # 26 x 120 frames
    held = {}
    camera.on_frame = lambda index: held.__setitem__(index, tracemalloc.get_traced_memory()[0]) if index in (
        1000, 2999) else None
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        code = predict.main(["--video", "picamera2", "--out", str(out), "--log", "frames", "--log-max-mb", "0.5",
                             "--window-s", "2", "--min-window-s", "1", "--max-frames", "3000"])
    finally:
        tracemalloc.stop()
    assert code == predict.EXIT_OK, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["picamera2_landmarks.jsonl", "picamera2_landmarks.jsonl.1"]
    sizes = [p.stat().st_size for p in out.iterdir()]
    assert all(size <= 500_000 for size in sizes) and sum(sizes) > 500_000
    lines = ((out / "picamera2_landmarks.jsonl.1").read_text() + (out / "picamera2_landmarks.jsonl").read_text())
    frames = [json.loads(line)["frame"] for line in lines.splitlines()]
    assert frames == list(range(3000 - len(frames), 3000))
    assert held[2999] - held[1000] < 1_000_000, held


# ---------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--d-cutoff", "0"], "--d-cutoff: wants a number above 0, got 0.0"),
    (["--min-cutoff", "nan"], "--min-cutoff: wants a number above 0, got nan"),
    (["--min-cutoff", "-0.5", "--beta", "0"], "--min-cutoff: wants a number above 0, got -0.5"),
    (["--beta", "nan"], "--beta: wants a number at least 0, got nan"),
    (["--beta", "-100"], "--beta: wants a number at least 0, got -100.0"),
    (["--max-faces", "0"], "--max-faces: wants a whole number at least 1, got 0"),
    (["--match-iou", "nan"], "--match-iou: wants a number from 0 to 1, got nan"),
    (["--min-score", "inf"], "--min-score: wants a number from 0 to 1, got inf"),
    (["--detect-every", "-1"], "--detect-every: wants a whole number at least 0, got -1"),
    (["--window-s", "0"], "--window-s: wants a number above 0, got 0.0"),
    (["--ear-close", "0.3"], "--ear-open 0.25 is below --ear-close 0.3"),
    (["--on-event-types", "drowsy,bogus"], "--on-event-types: wants event types from"),
    (["--camera-size", "640"], "--camera-size: wants WIDTHxHEIGHT"),
])
def test_tracking_and_monitor_flags_out_of_range_are_refused(flags, message, tmp_path, capsys):
    clip = tmp_path / "talk.avi"
    clip.write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        predict.main(["--video", str(clip), "--out", str(tmp_path / "out"), *flags])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# The event command
# ---------------------------------------------------------------------------------------

def test_the_event_command_gets_the_event_and_never_holds_up_the_loop(tmp_path):
    """The command waits for a file that only the test creates after offer() returned: the
    frame loop's call does not wait for the command."""
    gate, seen = tmp_path / "gate", tmp_path / "seen.jsonl"
    command = (f"while [ ! -e {gate} ]; do sleep 0.02; done; "
               f"cat >> {seen}; echo \"$LANDMARKS_EVENT_TYPE $LANDMARKS_EVENT\" >> {tmp_path / 'env.txt'}")
    hook = monitor.EventHook(command, types=("drowsy", "yawn"), every_s=60.0, timeout_s=30.0)
    drowsy = {"type": "drowsy", "time_s": 1.0, "track_id": 0, "perclos": 0.2}
    assert hook.offer(drowsy)
    assert not seen.exists()  # offer returned while the command still waits
    assert not hook.offer({**drowsy, "time_s": 2.0})  # the same type again within every_s
    assert not hook.offer({"type": "blink", "time_s": 2.5, "track_id": 0})  # not asked for
    assert hook.offer({"type": "yawn", "time_s": 3.0, "track_id": 0})
    gate.touch()
    hook.close(wait_s=30.0)
    assert [json.loads(line) for line in seen.read_text().splitlines()] == [
        drowsy, {"type": "yawn", "time_s": 3.0, "track_id": 0}]
    assert (tmp_path / "env.txt").read_text().splitlines()[0] == f"drowsy {json.dumps(drowsy)}"
    assert hook.counts == {"run": 2, "failed": 0, "rate_limited": 1, "dropped": 0}


def test_a_failing_or_hanging_event_command_is_reported_not_fatal(tmp_path, capsys):
    hook = monitor.EventHook("echo 'no buzzer on pin 17' >&2; exit 3", every_s=0.0)
    hook.offer({"type": "drowsy", "time_s": 1.0})
    hook.close(wait_s=30.0)
    assert ("warning: --on-event: \"echo 'no buzzer on pin 17' >&2; exit 3\" exited with status 3 "
            "on a drowsy event: no buzzer on pin 17") in capsys.readouterr().err
    started = time.monotonic()
    hook = monitor.EventHook(f"sleep 60 & sleep 60; touch {tmp_path / 'finished'}", every_s=0.0, timeout_s=0.5,
                             queue_size=1)
    assert hook.offer({"type": "yawn", "time_s": 1.0})
    while hook.waiting:  # until the command runs
        time.sleep(0.01)
    assert hook.offer({"type": "no_face", "time_s": 1.1})  # waits in the queue
    assert not hook.offer({"type": "drowsy", "time_s": 1.2})  # the queue is full: dropped
    hook.close(wait_s=30.0)
    assert time.monotonic() - started < 20  # both stopped after their 0.5 s, with what they started
    err = capsys.readouterr().err
    assert "ran over 0.5 s on a yawn event and was stopped" in err
    assert "ran over 0.5 s on a no_face event and was stopped" in err
    assert "the command is still busy; drowsy event dropped" in err
    assert hook.counts["failed"] == 2 and hook.counts["dropped"] == 1
    assert not (tmp_path / "finished").exists()


def test_predict_runs_the_event_command_on_a_long_closure(model, yale_photos, tmp_path, capsys):
    clip = closure_clip(tmp_path / "talk.avi", yale_photos)
    seen = tmp_path / "seen.jsonl"
    code = predict.main(["--video", str(clip), "--out", str(tmp_path / "out"), "--no-draw",
                         "--on-event", f"cat >> {seen}"])
    assert code == predict.EXIT_OK, capsys.readouterr().err
    events = [json.loads(line) for line in seen.read_text().splitlines()]
    assert [e["type"] for e in events] == ["drowsy", "long_closure"]
    assert events[1]["start_s"] == pytest.approx(3.0) and events[1]["duration_s"] == pytest.approx(3.0)


def test_monitor_events_no_face_and_drowsiness_end(model, yale_photos):
    """Eyes shut 1 s, then open, then no face for 3 s: drowsy, drowsy_end once the long
    closure leaves the (5 s) window, no_face after no_face_s (2 s), face_back."""
    eyes_open, shut = yale_photos
    blank = np.full_like(eyes_open, 128)
    frames = [eyes_open] * 10 + [shut] * 10 + [eyes_open] * 70 + [blank] * 30 + [eyes_open] * 10
    watcher = monitor.Monitor(model, predict.make_detector(), blink_options=face_measures.BlinkOptions(window_s=5.0),
                              no_face_s=2.0)
    events = []
    for index, frame in enumerate(frames):
        events += watcher.process(frame, index / FPS)[1]
    assert [e["type"] for e in events] == ["drowsy", "long_closure", "drowsy_end", "no_face", "face_back"]
    drowsy, closure, end, no_face, back = events
    assert drowsy["time_s"] == pytest.approx(1.6)  # shut at 1.0 s, more than max_blink_s (0.5 s) later
    assert closure["start_s"] == pytest.approx(1.0) and closure["end_s"] == pytest.approx(2.0)
    assert end["time_s"] == pytest.approx(7.0, abs=0.15)  # the closure left the 5 s window
    assert no_face["since_s"] == pytest.approx(8.9) and no_face["time_s"] == pytest.approx(10.9)
    assert back["time_s"] == pytest.approx(12.0)


# ---------------------------------------------------------------------------------------
# The examples in docs/monitor.md
# ---------------------------------------------------------------------------------------

EXAMPLES = REPO_DIR / "docs" / "examples"

STAND_IN_GPIOZERO = '''
"""gpiozero's Buzzer on a stand-in pin: each state it is set to, and when, goes to a file."""
import json, os, time


class Buzzer:
    def __init__(self, pin):
        self.pin = pin
        self.log = open(os.environ["STAND_IN_PIN_LOG"], "a")

    def _set(self, state):
        self.log.write(json.dumps({"pin": self.pin, "state": state, "t": time.monotonic()}) + "\\n")

    def beep(self, on_time=1, off_time=1, n=None, background=True):
        assert n is not None and not background, "the example must end, and wait for its beeps"
        for _ in range(n):
            self._set(True)
            time.sleep(on_time)
            self._set(False)
            time.sleep(off_time)

    def close(self):
        self.log.close()
'''


def test_the_gpio_example_beeps_on_a_stand_in_pin(tmp_path, monkeypatch):
    """docs/examples/buzzer.py run by the event command as the docs show: five beeps on
    GPIO 17 for drowsy, one long one for no_face, nothing for a blink."""
    (tmp_path / "gpiozero.py").write_text(STAND_IN_GPIOZERO)
    pin_log = tmp_path / "pin.jsonl"
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("STAND_IN_PIN_LOG", str(pin_log))
    monkeypatch.chdir(REPO_DIR)
    hook = monitor.EventHook(f"{sys.executable} docs/examples/buzzer.py", types=monitor.EVENT_TYPES, every_s=0.0)
    states = []
    for event in ({"type": "drowsy", "time_s": 3.6, "track_id": 0, "perclos": 0.2},
                  {"type": "blink", "time_s": 5.0, "track_id": 0},
                  {"type": "no_face", "time_s": 9.0, "since_s": 4.0}):
        assert hook.offer(event)
        while hook.waiting or not pin_log.exists() and event["type"] != "blink":
            time.sleep(0.05)
        time.sleep(0.1)
    hook.close(wait_s=30.0)
    assert hook.counts == {"run": 3, "failed": 0, "rate_limited": 0, "dropped": 0}
    records = [json.loads(line) for line in pin_log.read_text().splitlines()]
    states = [(r["pin"], r["state"]) for r in records]
    assert states == [(17, True), (17, False)] * 5 + [(17, True), (17, False)]
    assert records[-1]["t"] - records[-2]["t"] == pytest.approx(1.0, abs=0.3)  # the long beep


def test_the_systemd_unit_in_the_docs_is_valid(tmp_path):
    """systemd-analyze verify on the unit with its paths pointed at this checkout, and its
    command line run: the flags are app.py's, and the page serves without a Pi camera."""
    import shlex
    import shutil

    unit = (EXAMPLES / "drowsiness-monitor.service").read_text()
    here = unit.replace("/home/pi/landmarks/.venv/bin/python", sys.executable).replace(
        "/home/pi/landmarks", str(REPO_DIR)).replace("User=pi", f"User={os.environ.get('USER', 'root')}")
    if shutil.which("systemd-analyze"):
        path = tmp_path / "drowsiness-monitor.service"
        path.write_text(here)
        result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert str(path) not in result.stderr, result.stderr  # no warning about the unit itself
    command = next(line for line in here.splitlines() if line.startswith("ExecStart="))[len("ExecStart="):]
    argv = shlex.split(command.replace("--host 0.0.0.0", "--host 127.0.0.1 --port 0"))
    server = subprocess.Popen(argv, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = iter(server.stdout.readline, "")
        url = next(line.split()[-1] for line in lines if line.startswith("live page of picamera2:"))
        with urllib.request.urlopen(url.replace("/live", "/live/status"), timeout=60) as response:
            state = json.load(response)
        assert state["source"] == "picamera2"
    finally:
        server.terminate()
        server.wait(30)
