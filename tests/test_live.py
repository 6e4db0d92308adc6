"""The live page (live.py, app.py --camera): one tracker whoever watches, MJPEG frames, the
measures and a drowsy banner, in headless Chromium and over plain HTTP. The camera is a
video file of a real face (Yale, subject03) whose eyes shut for 3 s: played in real time."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request

import pytest

import app as app_module
import face_measures
import live
import predict
from test_app_browser import WAIT_S, browser  # noqa: F401 - the Chromium fixture
from test_monitor import closure_clip, picamera2, yale_photos  # noqa: F401 - fixtures

# A 4 s window: the banner goes about 4 s after the eyes open again, not a minute later.
BLINK_OPTIONS = face_measures.BlinkOptions(window_s=4.0, min_window_s=1.0)


@pytest.fixture
def serve(tmp_path):
    """serve(camera) -> (base URL, LiveMonitor): app.py --camera on loopback, in a thread."""
    from werkzeug.serving import make_server

    running = []

    def start(camera: str, **kwargs):
        monitor = live.LiveMonitor(camera, predict.LandmarkModel(), predict.make_detector(),
                                   blink_options=BLINK_OPTIONS, **kwargs)
        server = make_server("127.0.0.1", 0, app_module.create_app(live=monitor), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        monitor.start()
        running.append((server, thread, monitor))
        return f"http://127.0.0.1:{server.port}/", monitor

    yield start
    for server, thread, monitor in running:
        monitor.stop()
        server.shutdown()
        thread.join(10)


def status(base: str) -> dict:
    with urllib.request.urlopen(base + "live/status", timeout=WAIT_S) as response:
        return json.load(response)


def wait_until(test, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = test()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"waited {timeout_s} s for {what}")


def read_parts(base: str, count: int) -> tuple[list[bytes], http.client.HTTPResponse]:
    """The first ``count`` JPEGs of one viewer's stream; the response (the connection) stays open."""
    host, port = base.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=WAIT_S)
    connection.request("GET", "/live/stream.mjpg")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
    parts = []
    while len(parts) < count:
        assert response.readline() == b"--frame\r\n"
        headers = {}
        while (line := response.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.read(int(headers["content-length"])))
        assert response.read(2) == b"\r\n"
    return parts, response


def test_viewers_share_one_tracker_and_one_that_leaves_is_let_go(serve, yale_photos, tmp_path):
    import cv2
    import numpy as np

    base, monitor = serve(str(closure_clip(tmp_path / "camera.avi", yale_photos)))
    wait_until(lambda: status(base)["frames"] > 0, "the first frame")
    assert monitor.viewers == 0 and monitor._jpeg is None  # nobody watches: nothing encoded
    viewers = [read_parts(base, 5) for _ in range(3)]
    assert monitor.viewers == 3
    for parts, _ in viewers:
        frame = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape[1:] == (320, 3)  # the camera's frames, annotated
    # One tracker: it ran once per camera frame, however many watch.
    assert monitor.monitor.tracker.frame_index + 1 == monitor.frames
    for _, response in viewers:
        response.close()
    wait_until(lambda: monitor.viewers == 0, "the viewers' streams to end", 30)
    assert status(base)["viewers"] == 0


def test_the_event_command_runs_from_the_live_monitor(serve, yale_photos, tmp_path):
    import monitor

    seen = tmp_path / "seen.jsonl"
    clip = closure_clip(tmp_path / "camera.avi", yale_photos, 1.0, 2.0, 1.0)
    serve(str(clip), options=monitor.OutputOptions(on_event=f"cat >> {seen}", on_event_types=("drowsy",)))
    wait_until(lambda: seen.exists() and seen.read_text().endswith("\n"), "the command to get the drowsy event")
    event = json.loads(seen.read_text().splitlines()[0])
    assert event["type"] == "drowsy" and event["track_id"] == 0


def test_a_camera_that_goes_away_is_reported_and_the_page_keeps_serving(serve, picamera2, yale_photos, tmp_path):
    picamera2.Picamera2.video = closure_clip(tmp_path / "camera.avi", yale_photos, 1.0, 0.0, 0.0)
    base, monitor = serve("picamera2")
    # The stand-in camera stops after the clip's 10 frames; it is opened again every 2 s.
    state = wait_until(lambda: (s := status(base))["error"] and s, "the camera's loss to be reported")
    assert state["error"].startswith("picamera2: stopped delivering frames (unplugged?); trying again")
    assert state["frames"] >= 10 and state["faces"] == []
    with urllib.request.urlopen(base + "live", timeout=WAIT_S) as response:
        assert response.status == 200
    wait_until(lambda: len(picamera2.Picamera2.opened) >= 2, "the camera to be opened again")


def test_the_live_page_shows_the_stream_the_measures_and_a_drowsy_banner(browser, serve, yale_photos,  # noqa: F811
                                                                         tmp_path):
    """Eyes open 3 s, shut 3 s, open 12 s, looped: the banner comes during the closure and
    goes once it leaves the 4 s window; the frames and the measures keep coming."""
    from selenium.webdriver.support.ui import WebDriverWait

    clip = closure_clip(tmp_path / "camera.avi", yale_photos, 3.0, 3.0, 12.0)
    base, monitor = serve(str(clip))
    browser.get(base + "live")
    banner = browser.find_element("id", "banner")
    line = browser.find_element("id", "camera-status")
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda _: browser.execute_script(
        "const img = document.getElementById('stream'); return img.complete && img.naturalWidth") == 320)
    assert monitor.viewers >= 1
    first_frames = wait.until(lambda _: int(line.get_attribute("data-frames") or 0))
    assert not banner.is_displayed()
    wait.until(lambda _: browser.find_elements("css selector", "#measures tbody tr"))
    wait.until(lambda _: banner.is_displayed())
    shown_at = monitor.status()["time_s"]
    assert browser.find_element("css selector", "#measures tbody tr").get_attribute("class") == "drowsy"
    assert "DROWSY" in browser.find_element("id", "events").text
    wait.until(lambda _: not banner.is_displayed())
    gone_at = monitor.status()["time_s"]
    assert 5.0 < gone_at - shown_at < 15.0  # shut 3 s (banner after 0.5 s of it), then the 4 s window
    texts = [li.text for li in browser.find_elements("css selector", "#events li")]
    assert any("long eye closure (3.0" in text for text in texts) or any("no longer drowsy" in t for t in texts)
    perclos = browser.find_element("css selector", "#measures tbody tr td.perclos").text
    assert perclos.endswith("%")
    assert int(line.get_attribute("data-frames")) > first_frames + 50  # the measures kept coming
