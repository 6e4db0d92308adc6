"""app.py as a program calls it: the JSON API on real faces, every refusal, concurrent
requests, uploads that never touch the disk, and the server in the Pi environment."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import struct
import tempfile
import threading
import time
import urllib.request
import zlib

import cv2
import flask
import numpy as np
import pytest
import werkzeug.formparser

import app as app_module
from benchmarks import web_api as bench_app
import evaluate
import predict
from conftest import REPO_DIR

ASTRONAUT = REPO_DIR / "imgs" / "test_image.jpeg"  # public domain: the one photo the repo may hold


@pytest.fixture(scope="module")
def app():
    return app_module.create_app()


@pytest.fixture()
def client(app):
    return app.test_client()


def upload(client, data: bytes, filename: str = "photo.jpg", field: str = "image"):
    return client.post("/api/landmarks", data={field: (io.BytesIO(data), filename)},
                       content_type="multipart/form-data")


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with no pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "timing_ms"}


def matching_face(record: dict, face) -> dict:
    """The detected face whose points lie nearest the annotated ones."""
    return min(record["faces"], key=lambda f: np.linalg.norm(
        np.mean(f["landmarks"], axis=0) - face.landmarks_px.mean(axis=0)))


# ---------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------

def test_api_returns_what_predict_json_prints_for_a_real_face(client, lfpw_face):
    image_path, face = lfpw_face
    response = upload(client, image_path.read_bytes(), image_path.name)
    assert response.status_code == 200 and response.is_json
    record = response.get_json()

    expected, _ = predict.annotate_image(image_path, predict.LandmarkModel(),
                                           predict.make_detector(predict.DEFAULT_DETECTOR))
    assert without_timing(record) == {**expected, "image": image_path.name}
    found = matching_face(record, face)
    assert len(found["box"]) == 4 and np.asarray(found["landmarks"]).shape == (68, 2)
    assert evaluate.nme(np.asarray(found["landmarks"])[None], face.landmarks_px[None])[0] < 0.12
    timing = record["timing_ms"]
    assert set(timing) == {"decode", "detect", "landmarks", "total"}
    assert 0 < timing["decode"] + timing["detect"] + timing["landmarks"] <= timing["total"]


def test_raw_body_gives_the_same_faces_as_a_multipart_upload(client):
    data = ASTRONAUT.read_bytes()
    multipart = upload(client, data, "astronaut.jpeg").get_json()
    assert multipart["image"] == "astronaut.jpeg" and len(multipart["faces"]) == 1
    # curl --data-binary sends application/x-www-form-urlencoded unless told otherwise.
    for content_type in ("image/jpeg", "application/octet-stream", "application/x-www-form-urlencoded"):
        response = client.post("/api/landmarks", data=data, content_type=content_type)
        assert response.status_code == 200, (content_type, response.get_json())
        raw = response.get_json()
        assert raw["image"] == "upload"
        assert without_timing(raw) == {**without_timing(multipart), "image": "upload"}


def test_a_photo_without_a_face_has_no_faces(client):
    response = upload(client, png_bytes(np.full((240, 320, 3), 128, np.uint8)), "wall.png")
    assert response.status_code == 200
    assert response.get_json()["faces"] == [] and response.get_json()["width"] == 320


def test_healthz_reports_the_model_and_its_input_size(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    health = response.get_json()
    dim = json.loads(predict.metadata_path(predict.DEFAULT_MODEL).read_text())["framing"]["image_dim"]
    assert health["status"] == "ok" and health["model"] == predict.DEFAULT_MODEL.name
    assert health["input_size"] == [dim, dim]


def test_page_and_its_script_are_served_from_here(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="file"' in html and 'id="canvas"' in html and "/static/app.js" in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere: works offline
    assert json.loads(html.split("data-outline='")[1].split("'")[0]) == [list(g) for g in predict.OUTLINE_68]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "api/landmarks" in script.get_data(as_text=True)
    script.close()


# ---------------------------------------------------------------------------------------
# Refusals: each with its status and a message naming the fault, always JSON
# ---------------------------------------------------------------------------------------

def truncated_jpeg() -> bytes:
    data = ASTRONAUT.read_bytes()
    return data[:len(data) // 2]


@pytest.mark.parametrize("send, status, message", [
    (lambda c: c.post("/api/landmarks"), 400, "no image: send it as the multipart field 'image'"),
    (lambda c: upload(c, ASTRONAUT.read_bytes(), field="file"), 400, "no 'image' field (got file)"),
    (lambda c: upload(c, b"", "photo.jpg"), 400, "photo.jpg: empty file"),
    (lambda c: upload(c, b"name,score\nada,3\n", "scores.csv"), 400, "scores.csv: not an image"),
    (lambda c: c.post("/api/landmarks", data=b"hello", content_type="image/jpeg"), 400,
     "upload: not an image"),
    (lambda c: upload(c, truncated_jpeg(), "cut.jpg"), 400, "cut.jpg: not an image OpenCV can read"),
    (lambda c: upload(c, png_header_only(9_000, 9_000), "huge.png"), 400,
     "huge.png: image too large (9000x9000 pixels; the limit is 80 MP)"),
    (lambda c: upload(c, png_header_only(30_000, 30_000), "bomb.png"), 400,  # past Pillow's own limit
     "bomb.png: image too large"),
    (lambda c: c.get("/api/landmarks"), 405, "Method Not Allowed: GET /api/landmarks"),
    (lambda c: c.post("/api/nothing-here", data=b"x"), 404, "Not Found: POST /api/nothing-here"),
], ids=["no-body", "wrong-field", "empty", "csv", "raw-text", "truncated-jpeg", "huge-pixels", "pillow-bomb",
        "wrong-method", "unknown-route"])
def test_bad_requests_are_refused_with_a_json_message(client, send, status, message):
    response = send(client)
    assert response.status_code == status
    assert response.is_json and response.get_json()["status"] == status
    assert message in response.get_json()["error"]


def test_uploads_over_the_size_limit_get_413_json():
    client = app_module.create_app(max_upload_mb=0.05).test_client()
    data = ASTRONAUT.read_bytes()  # 75 KB
    assert len(data) > 0.05 * 2**20
    for response in (upload(client, data), client.post("/api/landmarks", data=data,
                                                       content_type="image/jpeg")):
        assert response.status_code == 413 and response.is_json
        assert response.get_json()["error"] == "upload too large: the limit is 0.05 MB"
    assert upload(client, png_bytes(np.full((60, 80, 3), 90, np.uint8))).status_code == 200


def test_chunked_uploads_over_the_size_limit_get_413_too():
    """Without a Content-Length the size is only known while reading: a live server, on
    loopback, with HTTP chunked uploads (raw and multipart)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app_module.create_app(max_upload_mb=0.05), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def post_chunked(body: bytes, content_type: str):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            connection.request("POST", "/api/landmarks", headers={"Content-Type": content_type},
                               body=(body[i:i + 8192] for i in range(0, len(body), 8192)),
                               encode_chunked=True)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    try:
        big, small = ASTRONAUT.read_bytes(), png_bytes(np.full((60, 80, 3), 90, np.uint8))
        for body, content_type in [(big, "image/jpeg"), bench_app.multipart_body(big, "a.jpeg")]:
            status, record = post_chunked(body, content_type)
            assert status == 413 and record["error"] == "upload too large: the limit is 0.05 MB"
        for body, content_type in [(small, "image/png"), bench_app.multipart_body(small, "a.png")]:
            status, record = post_chunked(body, content_type)
            assert status == 200 and record["width"] == 80
    finally:
        server.shutdown()
        thread.join(10)


def test_a_path_from_the_client_is_only_a_name_never_opened(client, lfpw_face):
    image_path, _ = lfpw_face
    blank = png_bytes(np.full((120, 160, 3), 200, np.uint8))
    # The file name is a real face's path; the bytes are a blank picture: the bytes win.
    record = upload(client, blank, str(image_path)).get_json()
    assert record["image"] == image_path.name and record["faces"] == [] and record["width"] == 160
    response = upload(client, b"not an image", "../../../etc/passwd")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("passwd: not an image")


def test_uploads_are_read_in_memory_never_written_to_disk(client, monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("a request tried to create a temporary file")

    for module, name in [(tempfile, "SpooledTemporaryFile"), (tempfile, "TemporaryFile"),
                         (tempfile, "NamedTemporaryFile"), (tempfile, "mkstemp"),
                         (tempfile, "mkdtemp"), (werkzeug.formparser, "SpooledTemporaryFile")]:
        monkeypatch.setattr(module, name, no_disk)
    photo = cv2.imread(str(ASTRONAUT))
    big = png_bytes(cv2.resize(photo, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    assert len(big) > 600_000  # Werkzeug spools uploads over 500 KB to a temporary file

    plain = flask.Flask("plain")  # the control: Werkzeug's own request class does spool
    plain.testing = True
    plain.post("/api/landmarks")(lambda: str(len(flask.request.files["image"].read())))
    with pytest.raises(AssertionError, match="temporary file"):
        upload(plain.test_client(), big)

    response = upload(client, big, "big.png")
    assert response.status_code == 200
    assert response.get_json()["width"] == 1024 and response.get_json()["faces"]


def test_a_busy_server_answers_503_instead_of_queueing_without_bound(lfpw_face):
    app = app_module.create_app(workers=1, max_pending=1)
    service = app.extensions["landmarks"]
    entered, release = threading.Event(), threading.Event()
    annotate = service._annotate

    def slow_annotate(data, name):
        entered.set()
        release.wait(30)
        return annotate(data, name)

    service._annotate = slow_annotate
    data = ASTRONAUT.read_bytes()
    first = {}
    worker = threading.Thread(target=lambda: first.update(response=upload(app.test_client(), data)))
    worker.start()
    try:
        assert entered.wait(30)
        busy = upload(app.test_client(), data)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.get_json()["error"].startswith("busy")
    finally:
        release.set()
        worker.join(60)
    assert first["response"].status_code == 200
    assert upload(app.test_client(), data).status_code == 200  # the slot is free again


def test_internal_errors_are_json_without_details(monkeypatch):
    app = app_module.create_app()
    app.logger.disabled = True  # the traceback would go to the log; not needed here

    def broken(data, name):
        raise RuntimeError("secret detail /home/pi/models")

    monkeypatch.setattr(app.extensions["landmarks"], "_annotate", broken)
    response = upload(app.test_client(), ASTRONAUT.read_bytes())
    assert response.status_code == 500 and response.is_json
    assert response.get_json()["error"] == "internal error while processing the image"
    assert "secret" not in response.get_data(as_text=True)


def test_an_unusable_model_stops_the_app_at_start(tmp_path, capsys):
    missing = tmp_path / "missing.tflite"
    with pytest.raises(predict.InputError, match="missing.tflite: model file not found"):
        app_module.create_app(model_path=missing)
    assert app_module.main(["--model", str(missing), "--port", "0"]) == predict.EXIT_BAD_INPUT
    assert "missing.tflite: model file not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------

def test_concurrent_requests_are_all_answered_correctly(lfpw_face):
    """16 threads at once, two different photos: every answer equals the photo's answer to a
    lone request, and the work ran on the pool's threads alone (one interpreter each)."""
    app = app_module.create_app(workers=2)
    service = app.extensions["landmarks"]
    photos = {ASTRONAUT.name: ASTRONAUT.read_bytes(), lfpw_face[0].name: lfpw_face[0].read_bytes()}
    alone = {name: without_timing(upload(app.test_client(), data, name).get_json())
             for name, data in photos.items()}
    assert all(len(record["faces"]) >= 1 for record in alone.values())

    threads_used = set()
    annotate = service._annotate

    def recording_annotate(data, name):
        threads_used.add(threading.current_thread().name)
        return annotate(data, name)

    service._annotate = recording_annotate
    names = list(photos) * 12
    answers = [None] * len(names)
    start = threading.Barrier(16)

    def worker(index):
        client = app.test_client()
        start.wait(30)
        for i in range(index, len(names), 16):
            answers[i] = upload(client, photos[names[i]], names[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for name, response in zip(names, answers):
        assert response is not None and response.status_code == 200, name
        assert without_timing(response.get_json()) == alone[name]
    assert 1 <= len(threads_used) <= 2 and all(n.startswith("landmarks") for n in threads_used)


def test_bench_app_loads_the_live_server_without_errors(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_app.main(["-n", "12", "-c", "4", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["requests"] == 12 and figures["errors"] == 0 and figures["faces"] == 1
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"]
    printed = capsys.readouterr().out
    assert "latency ms: p50" in printed and "errors: 0" in printed and "machine:" in printed


# ---------------------------------------------------------------------------------------
# The Raspberry Pi environment
# ---------------------------------------------------------------------------------------

def test_app_serves_in_the_pi_environment_on_loopback(pi_python):
    process = None
    try:
        process, url = bench_app.start_server(pi_python, None, workers=1)
        assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        with urllib.request.urlopen(url + "healthz", timeout=30) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["model"] == predict.DEFAULT_MODEL.name
        body, content_type = bench_app.multipart_body(ASTRONAUT.read_bytes(), "astronaut.jpeg")
        status, record = bench_app.post(url + "api/landmarks", body, content_type, timeout=60)
        assert status == 200 and record["image"] == "astronaut.jpeg"
        assert [len(face["landmarks"]) for face in record["faces"]] == [68]
        status, error = bench_app.post(url + "api/landmarks", b"hello", "text/plain", timeout=60)
        assert status == 400 and error["error"].startswith("upload: not an image")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)


# ---------------------------------------------------------------------------------------
# Hardening (issue 12)
# ---------------------------------------------------------------------------------------

def test_a_multipart_of_many_small_parts_is_told_so_not_that_it_is_too_large(client):
    fields = {f"f{i}": "x" for i in range(5000)}  # ~200 KB, far under the 16 MB limit
    fields["image"] = (io.BytesIO(ASTRONAUT.read_bytes()), "photo.jpg")
    response = client.post("/api/landmarks", data=fields, content_type="multipart/form-data")
    assert response.status_code == 413 and response.is_json
    assert response.get_json()["error"].startswith("multipart upload refused: more than 1000 parts")


def test_a_hdr_upload_is_refused_before_decoding(client):
    ok, encoded = cv2.imencode(".hdr", np.ones((30, 40, 3), np.float32))
    assert ok
    response = upload(client, encoded.tobytes(), "wide.hdr")
    assert response.status_code == 400
    assert "wide.hdr: not an image whose size can be read before decoding" in response.get_json()["error"]


def test_a_model_answering_nonsense_gets_500_naming_the_model(tmp_path):
    from test_predict import model_with_constant_output

    broken = model_with_constant_output(tmp_path / "broken.tflite", 5e6)
    client = app_module.create_app(model_path=broken).test_client()
    response = upload(client, ASTRONAUT.read_bytes())
    assert response.status_code == 500
    assert response.get_json()["error"].startswith("broken.tflite: the model output a coordinate of 5e+06")


@pytest.mark.parametrize("flag, value, message", [
    ("--port", "99999", "--port: wants a port number from 0 to 65535, got '99999'"),
    ("--max-upload-mb", "-1", "--max-upload-mb: wants a size in MB above 0, got '-1'"),
    ("--max-upload-mb", "nan", "--max-upload-mb: wants a size in MB above 0, got 'nan'"),
    ("--workers", "0", "--workers: wants a whole number of at least 1, got '0'"),
])
def test_out_of_range_server_settings_are_refused(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        app_module.main([flag, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Hostile clients: memory and threads stay bounded, messages say what is wrong
# ---------------------------------------------------------------------------------------

def test_an_image_field_sent_as_text_is_told_so(client):
    response = client.post("/api/landmarks", data={"image": "photo.jpg"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("the multipart field 'image' is text, not a file")


def test_a_bad_host_or_a_port_in_use_exits_2_with_one_line(capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for args, message in [(["--host", "no.such.host.invalid"], "--host no.such.host.invalid: cannot listen there"),
                              (["--port", str(port)], f"cannot listen on 127.0.0.1:{port} (Address already in use)")]:
            try:
                code = app_module.main(args)
            except SystemExit as stop:
                code = stop.code
            err = capsys.readouterr().err
            assert code == 2 and f"error: {message}" in err, err
    finally:
        taken.close()


def test_a_model_deleted_or_replaced_while_serving_changes_nothing(tmp_path):
    model = tmp_path / "landmarks_int8.tflite"
    model.write_bytes(predict.DEFAULT_MODEL.read_bytes())
    model.with_suffix(".json").write_text(predict.metadata_path(predict.DEFAULT_MODEL).read_text())
    client = app_module.create_app(model_path=model, workers=2).test_client()
    model.write_bytes(b"\x00" * 64)  # replaced by junk, then gone
    model.unlink()
    model.with_suffix(".json").unlink()
    for _ in range(3):  # every worker thread builds its interpreter now, from the model loaded
        response = upload(client, ASTRONAUT.read_bytes())
        assert response.status_code == 200 and len(response.get_json()["faces"]) == 1
    assert str(tmp_path) not in response.get_data(as_text=True)
    assert client.get("/healthz").get_json()["status"] == "ok"


@contextlib.contextmanager
def live_server(app, **settings):
    server = app_module.serve(app, "127.0.0.1", 0, **settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def read_response(connection: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the answer on a raw connection (the server closes it)."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    assert [int(v) for v in length] == [len(body)], "the answer's Content-Length is its body's"
    return int(head.split()[1]), json.loads(body)


def post_head(port: int, length: int, content_type: str = "image/jpeg") -> socket.socket:
    """A connection that has sent a POST's headers announcing ``length`` bytes, and no body."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(f"POST /api/landmarks HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                       f"Content-Length: {length}\r\n\r\n".encode())
    return connection


def test_uploads_past_the_inflight_budget_get_503_before_their_body_is_read(app):
    small = app_module.create_app(max_upload_mb=1, max_inflight_mb=1)
    with live_server(small) as port:
        first = post_head(port, 900_000)  # holds 900 KB of the 1 MB budget while it trickles in
        first.sendall(b"\xff" * 1000)
        deadline = time.monotonic() + 30
        while small.extensions["landmarks"].upload_budget.used == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = post_head(port, 900_000)  # its body is never sent: the answer comes first
        status, record = read_response(second)
        assert status == 503 and record["error"].startswith("busy")
        first.sendall(b"\x00" * (900_000 - 1000))
        status, record = read_response(first)
        assert status == 400 and "not an image" in record["error"]
        assert small.extensions["landmarks"].upload_budget.used == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"


def test_connections_past_the_limit_get_503_at_once_and_idle_ones_are_dropped(app):
    with live_server(app, max_connections=2, client_timeout_s=1.0) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        time.sleep(0.2)  # both accepted and waiting for a request line
        extra = socket.create_connection(("127.0.0.1", port), timeout=30)
        status, record = read_response(extra)  # without sending anything
        assert status == 503 and record == {"error": "busy: too many connections, try again shortly",
                                            "status": 503}
        for connection in idle:  # the server hangs up on clients that send nothing
            assert connection.recv(1024) == b""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert response.status == 200  # their places are free again


def test_a_stalled_upload_is_answered_408_and_frees_its_budget(app):
    with live_server(app, client_timeout_s=1.0) as port:
        stalled = post_head(port, 500_000)
        stalled.sendall(b"\xff\xd8" + b"\x00" * 1000)
        status, record = read_response(stalled)
        assert status == 408 and record["error"].startswith("upload timed out: the client stopped sending")
        assert app.extensions["landmarks"].upload_budget.used == 0


def test_a_photo_too_thin_for_a_face_has_no_faces_with_haar():
    client = app_module.create_app(detector="haar").test_client()
    response = upload(client, png_bytes(np.full((2, 20_000, 3), 128, np.uint8)), "wide.png")
    assert response.status_code == 200 and response.get_json()["faces"] == []


def test_a_model_whose_framing_is_out_of_range_stops_the_app_at_start(tmp_path):
    model = tmp_path / "odd.tflite"
    model.write_bytes(predict.DEFAULT_MODEL.read_bytes())
    metadata = json.loads(predict.metadata_path(predict.DEFAULT_MODEL).read_text())
    metadata["framing"]["crop_shift_y"] = 1e308
    model.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(predict.InputError,
                       match=r"odd.json: unusable framing: crop_shift_y 1e\+308 is outside \[-0.5, 0.5\]"):
        app_module.create_app(model_path=model)  # main prints it and exits 2, as for any bad model
