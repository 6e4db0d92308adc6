"""The web page in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by .ci/run) driven by Selenium against app.py served on loopback.

The screenshot in imgs/app_screenshot.png is of the public-domain astronaut photo; the
300-W face is only ever shown in a temporary folder (its licence forbids committing it).
The test writes its screenshot to a temporary folder; regenerate the committed one by hand with
``UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_app_browser.py -k screenshot``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

import app as app_module
from benchmarks import web_api as bench_app
from conftest import REPO_DIR

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ASTRONAUT = REPO_DIR / "imgs" / "test_image.jpeg"
SCREENSHOT = REPO_DIR / "imgs" / "app_screenshot.png"
WAIT_S = 90  # the shared CI machine can be slow


def skip_or_fail(message: str):
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def live_server():
    """app.py on 127.0.0.1, a free port, in a thread: its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app_module.create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}/"
    server.shutdown()
    thread.join(10)


def face_video(folder: Path, frames: int = 30) -> Path:
    """The astronaut photo as a short MJPEG clip (concatenated JPEG frames), for Chromium's
    fake camera (--use-file-for-fake-video-capture): the webcam sees a real face."""
    import cv2

    ok, frame = cv2.imencode(".jpg", cv2.imread(str(ASTRONAUT)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    path = folder / "face.mjpeg"
    path.write_bytes(frame.tobytes() * frames)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed: pip install -r requirements-dev.txt")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            skip_or_fail(f"{path} not found: apt-get install -y chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1200,960",
                     "--hide-scrollbars", "--force-device-scale-factor=1",
                     # A fake camera that films the astronaut photo, allowed without asking.
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                     f"--use-file-for-fake-video-capture={face_video(tmp_path_factory.mktemp('camera'))}",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def choose_photo(driver, base_url: str, path: Path) -> str:
    """Open the page, choose `path` in the file input, wait for the answer: the status state."""
    driver.get(base_url)
    driver.find_element("id", "file").send_keys(str(path))
    return wait_for_answer(driver)


def wait_for_answer(driver) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    status = driver.find_element("id", "status")
    WebDriverWait(driver, WAIT_S).until(
        lambda _: status.get_attribute("data-state") in ("done", "error"))
    return status.get_attribute("data-state")


def shown_points(driver) -> dict:
    """What the page shows: counts on the canvas and per face in the list."""
    canvas = driver.find_element("id", "canvas")
    return {"canvas_points": int(canvas.get_attribute("data-points")),
            "canvas_faces": int(canvas.get_attribute("data-faces")),
            "per_face": [int(li.get_attribute("data-points"))
                         for li in driver.find_elements("css selector", "#faces li.face")],
            "size": [int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))]}


def canvas_colours(driver, points) -> list:
    """RGB of the canvas pixel under each point (pixel centres on integers, as in OpenCV)."""
    return driver.execute_script("""
        const ctx = document.getElementById('canvas').getContext('2d');
        return arguments[0].map(([x, y]) =>
            Array.from(ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3)));
    """, [list(p) for p in points])


def api_record(base_url: str, path: Path) -> dict:
    body, content_type = bench_app.multipart_body(path.read_bytes(), path.name)
    status, record = bench_app.post(base_url + "api/landmarks", body, content_type, timeout=WAIT_S)
    assert status == 200, record
    return record


def assert_points_drawn(driver, record: dict):
    """Every landmark of every face is a red dot on the canvas, where the API put it."""
    for face in record["faces"]:
        colours = canvas_colours(driver, face["landmarks"])
        assert all(r > 200 and g < 80 and b < 80 for r, g, b in colours), colours


def test_a_real_face_gets_68_points_drawn(browser, live_server, lfpw_face, tmp_path):
    image_path, face = lfpw_face
    assert choose_photo(browser, live_server, image_path) == "done", \
        browser.find_element("id", "status").text
    record = api_record(live_server, image_path)
    shown = shown_points(browser)
    assert shown["size"] == [record["width"], record["height"]]
    assert shown["canvas_faces"] == len(record["faces"]) >= 1
    assert shown["per_face"] == [68] * len(record["faces"])
    assert shown["canvas_points"] == 68 * len(record["faces"])
    assert f"{image_path.name}" in browser.find_element("id", "status").text
    assert "server" in browser.find_element("id", "timing").text
    assert_points_drawn(browser, record)
    browser.save_screenshot(str(tmp_path / "lfpw_face.png"))  # 300-W: stays in tmp


def test_screenshot_of_the_astronaut_with_landmarks(browser, live_server, tmp_path):
    assert choose_photo(browser, live_server, ASTRONAUT) == "done"
    record = api_record(live_server, ASTRONAUT)
    shown = shown_points(browser)
    assert shown["per_face"] == [68] and shown["canvas_points"] == 68
    assert browser.find_element("id", "status").text.startswith("1 face, 68 points in test_image.jpeg")
    assert_points_drawn(browser, record)
    shot = tmp_path / "app_screenshot.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT"):  # by hand only: tests never write into the repo
        shutil.copyfile(shot, SCREENSHOT)


def test_a_photo_dropped_on_the_page_is_sent(browser, live_server):
    browser.get(live_server)
    browser.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'dropped.jpeg', {type: 'image/jpeg'}));
        document.getElementById('drop').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    """, base64.b64encode(ASTRONAUT.read_bytes()).decode())
    assert wait_for_answer(browser) == "done"
    assert browser.find_element("id", "status").text.startswith("1 face, 68 points in dropped.jpeg")
    assert shown_points(browser)["per_face"] == [68]


def test_errors_from_the_server_are_shown(browser, live_server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    assert choose_photo(browser, live_server, notes) == "error"
    assert browser.find_element("id", "status").text.startswith("notes.txt: not an image")
    assert shown_points(browser)["canvas_points"] == 0


def test_a_webcam_snapshot_is_sent_and_drawn(browser, live_server):
    """The fake camera films the astronaut: the snapshot must come back with her face and
    68 points, drawn where the API puts them on the photo itself."""
    import cv2
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server)
    assert browser.find_element("id", "webcam").is_displayed()
    browser.find_element("id", "camera").click()
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script("return document.getElementById('video').videoWidth") > 0)
    width, height = browser.execute_script(
        "const v = document.getElementById('video'); return [v.videoWidth, v.videoHeight];")
    browser.find_element("id", "snapshot").click()
    assert wait_for_answer(browser) == "done"
    assert "webcam.jpg" in browser.find_element("id", "status").text
    shown = shown_points(browser)
    photo_height, photo_width = cv2.imread(str(ASTRONAUT)).shape[:2]
    assert shown["size"] == [width, height] == [photo_width, photo_height]
    assert shown["canvas_faces"] == 1 and shown["per_face"] == [68] and shown["canvas_points"] == 68
    # The snapshot went through the camera's colour conversion and a JPEG re-encoding, so
    # its points are near, not on, those of the photo: within 3 px, a dot's radius or so.
    record = api_record(live_server, ASTRONAUT)
    colours = canvas_colours(browser, record["faces"][0]["landmarks"])
    assert sum(r > 200 and g < 80 and b < 80 for r, g, b in colours) >= 60, colours


def test_the_page_loads_nothing_from_elsewhere(browser, live_server):
    browser.get(live_server)
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);")
    assert urls and all(url.startswith(live_server) for url in urls), json.dumps(urls)


def test_the_pose_axes_and_measures_are_shown(browser, live_server):
    """The page draws each face's head axes where face_measures.pose_axes_px puts them, in
    their colours, and lists the pose and the eye and mouth values."""
    import numpy as np

    import face_measures

    assert choose_photo(browser, live_server, ASTRONAUT) == "done"
    record = api_record(live_server, ASTRONAUT)
    faces = [face for face in record["faces"] if face["pose"]["yaw"] is not None]
    assert faces, record
    canvas = browser.find_element("id", "canvas")
    assert int(canvas.get_attribute("data-axes")) == len(faces)
    rgb_of = {bgr: bgr[::-1] for bgr in face_measures.AXIS_COLORS_BGR}
    for face in faces:
        axes = face_measures.pose_axes_px(face["landmarks"], face["pose"])
        for end, bgr in zip(axes[1:], face_measures.AXIS_COLORS_BGR):
            if np.linalg.norm(end - axes[0]) < 12:  # seen end-on: too short to sample
                continue
            samples = [axes[0] + t * (end - axes[0]) for t in np.linspace(0.4, 0.95, 12)]
            colours = canvas_colours(browser, samples)
            assert any(np.abs(np.array(c) - rgb_of[bgr]).max() < 40 for c in colours), (bgr, colours)
    texts = [li.find_element("css selector", ".measures").text
             for li in browser.find_elements("css selector", "#faces li.face")]
    face = record["faces"][0]
    assert f"(EAR) L {face['eyes']['left_ear']:.2f} R {face['eyes']['right_ear']:.2f}" in texts[0]
    assert f"MAR) {face['mouth']['mar']:.2f}" in texts[0] and "yaw" in texts[0]
