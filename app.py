"""A web page and a JSON API for the landmark model: runs on a Raspberry Pi.

    python app.py                                   # http://127.0.0.1:5000
    python app.py --model models/landmarks_float32.tflite --host 0.0.0.0 --port 8000
    python app.py --camera picamera2                # and a live drowsiness page at /live (docs/monitor.md)

    curl -F image=@imgs/test_image.jpeg http://127.0.0.1:5000/api/landmarks
    curl --data-binary @imgs/test_image.jpeg http://127.0.0.1:5000/api/landmarks
    curl http://127.0.0.1:5000/healthz

The page takes an upload, a dropped file or a webcam snapshot and draws the boxes and the 68
points over it. ``POST /api/landmarks`` returns the record ``predict.py --json`` prints, plus
``timing_ms``. Detection, framing and the model are predict.py's; this file only serves them.

Uploads are read into memory (at most ``--max-upload-mb`` each) and never written to disk; a
client's file name is only echoed back, never opened. Memory stays bounded under any load:
at most ``--max-connections`` connections are served at once (more get 503 at once), the
uploads held at once total at most ``--max-inflight-mb`` (a request that would pass it gets
503 before its body is read), at most 80 MP of photos are decoded at once, and a client
silent for ``--client-timeout`` seconds is disconnected.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from flask import Flask, Request, jsonify, render_template, request
from PIL import Image
from werkzeug.exceptions import ClientDisconnected, HTTPException, InternalServerError
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

import predict  # noqa: I001 - first: it caps OpenCV's image decoders before cv2 loads
import live as live_page

DEFAULT_MAX_UPLOAD_MB = 16
DEFAULT_WORKERS = 2
DEFAULT_MAX_PENDING = 32
DEFAULT_MAX_INFLIGHT_MB = 64  # all uploads being read, waiting or processed, together
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_CLIENT_TIMEOUT_S = 20.0


class InMemoryRequest(Request):
    """Multipart uploads stay in memory (bounded by MAX_CONTENT_LENGTH): Werkzeug would
    spool parts over 500 KB to a temporary file."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


class Busy(Exception):
    """More requests are waiting than the server takes on."""


class Budget:
    """A shared amount (bytes, pixels) that requests take from and give back: ``take``
    waits for room, ``try_take`` answers at once whether there was room."""

    def __init__(self, total: int):
        self.total, self.used = int(total), 0
        self._changed = threading.Condition()

    def try_take(self, amount: int) -> bool:
        with self._changed:
            if self.used + amount > self.total:
                return False
            self.used += amount
            return True

    @contextlib.contextmanager
    def taken(self, amount: int):
        """Hold ``amount`` (at most the total) while the block runs, waiting for room first."""
        amount = min(int(amount), self.total)
        with self._changed:
            self._changed.wait_for(lambda: self.used + amount <= self.total)
            self.used += amount
        try:
            yield
        finally:
            self.give(amount)

    def give(self, amount: int) -> None:
        with self._changed:
            self.used -= amount
            self._changed.notify_all()


def header_pixels(data: bytes) -> int:
    """The pixel count an encoded image's header claims (0 when it cannot be read: decoding
    then refuses the image with its own message)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.size[0] * probe.size[1]
    except Exception:  # noqa: BLE001 - any unreadable header; decode_image names the fault
        return 0


class LandmarkService:
    """predict.py's detector and model on a fixed pool of worker threads.

    LandmarkModel keeps one TFLite interpreter per thread, and an OpenCV cascade is not
    documented as thread-safe, so each worker builds its own of both once and keeps them:
    nothing is shared between threads, and nothing is rebuilt per request (the web server
    starts a new thread for every connection). At most ``max_pending`` requests wait;
    beyond that ``annotate`` raises Busy instead of queueing without bound.
    """

    def __init__(self, model_path=predict.DEFAULT_MODEL, detector: str = predict.DEFAULT_DETECTOR,
                 workers: int = DEFAULT_WORKERS, max_pending: int = DEFAULT_MAX_PENDING,
                 max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_MB * 2**20):
        if detector not in predict.DETECTORS:
            raise predict.InputError(f"detector {detector!r}: unknown, choose from "
                                     f"{', '.join(sorted(predict.DETECTORS))}")
        self.model = predict.LandmarkModel(model_path)
        self.detector_name = detector
        predict.make_detector(detector)  # fail now, not on the first request, if it cannot load
        self.workers = workers
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="landmarks")
        self._slots = threading.BoundedSemaphore(max_pending)
        self.upload_budget = Budget(max_inflight_bytes)
        # Decoded photos at once, whatever their number: one of the largest, or many small.
        self.pixel_budget = Budget(predict.MAX_PIXELS)

    def _detector(self):
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = predict.make_detector(self.detector_name)
        return detector

    def _annotate(self, data: bytes, name: str) -> dict:
        started = time.perf_counter()
        with self.pixel_budget.taken(header_pixels(data)):
            image = predict.decode_image(data, name)
            decoded = time.perf_counter()
            detections = self._detector().detect(image)
            detected = time.perf_counter()
            predictions = predict.keep_faces(self.model.predict_detections(image, detections))
            done = time.perf_counter()
        return {**predict.image_record(name, image, predictions),
                "timing_ms": {"decode": ms(decoded - started), "detect": ms(detected - decoded),
                              "landmarks": ms(done - detected)}}

    def annotate(self, data: bytes, name: str) -> dict:
        """The predict.py JSON record of one encoded image; InputError if it is unusable."""
        with self.admitted(len(data)):
            return self.process(data, name)

    @contextlib.contextmanager
    def admitted(self, upload_bytes: int):
        """Room for one more request, taken before its body is read: a pending slot and
        ``upload_bytes`` of the upload budget, both held until it is answered; Busy at once
        when either is used up."""
        if not self._slots.acquire(blocking=False):
            raise Busy
        try:
            if not self.upload_budget.try_take(upload_bytes):
                raise Busy
            try:
                yield
            finally:
                self.upload_budget.give(upload_bytes)
        finally:
            self._slots.release()

    def process(self, data: bytes, name: str) -> dict:
        """annotate, for a request already ``admitted``."""
        return self._pool.submit(self._annotate, data, name).result()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def upload_name(filename: str | None) -> str:
    """The last part of a client's file name, for the JSON record only (it is never opened)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    return name[:200] or "upload"


def read_upload() -> tuple[bytes, str]:
    """The image bytes and their name: multipart field ``image``, or the raw request body."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None and "image" in request.form:
            raise predict.InputError("the multipart field 'image' is text, not a file: send the photo "
                                     "as a file (curl -F image=@photo.jpg)")
        if upload is None:
            fields = sorted(set(request.files) | set(request.form))
            raise predict.InputError("multipart upload has no 'image' field"
                                     + (f" (got {', '.join(fields[:5])})" if fields else ""))
        return upload.read(), upload_name(upload.filename)
    data = request.get_data(cache=False)  # never parsed as a form: curl --data-binary works as is
    if request.content_length is None and len(data) >= request.max_content_length:
        # A chunked body is cut at the limit without complaint; reading on raises 413.
        request.stream.read(1)
    if not data:
        raise predict.InputError("no image: send it as the multipart field 'image' "
                                 "or as the request body")
    return data, "upload"


class UploadTimeout(Exception):
    """The client stopped sending its upload."""


def upload_reservation(max_bytes: int) -> int:
    """The bytes to reserve for this request's body before reading it: its Content-Length,
    or the limit when it is chunked (its size is known only once read)."""
    length = request.content_length
    return max_bytes if length is None else min(length, max_bytes)


def read_upload_in_time() -> tuple[bytes, str]:
    """read_upload, with a client that stops sending (the connection's timeout) as
    UploadTimeout rather than a bad request."""
    try:
        return read_upload()
    except (TimeoutError, ClientDisconnected):  # Werkzeug reports a timeout as a disconnection
        raise UploadTimeout("upload timed out: the client stopped sending before the end of "
                            "its upload") from None


def json_error(status: int, message: str):
    response = jsonify(error=message, status=status)
    response.status_code = status
    return response


def create_app(model_path=predict.DEFAULT_MODEL, detector: str = predict.DEFAULT_DETECTOR,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = DEFAULT_WORKERS,
               max_pending: int = DEFAULT_MAX_PENDING,
               max_inflight_mb: float = DEFAULT_MAX_INFLIGHT_MB,
               live: live_page.LiveMonitor | None = None) -> Flask:
    """The Flask app, with the model loaded once (InputError if it cannot be); with ``live``,
    the camera's live page too (live.py)."""
    max_inflight_mb = max(max_inflight_mb, max_upload_mb)  # room for one upload of the largest size
    service = LandmarkService(model_path, detector, workers, max_pending, int(max_inflight_mb * 2**20))
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.json.sort_keys = False  # the keys in predict.py --json's order
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.extensions["landmarks"] = service
    if live is not None:
        live_page.register(app, live)

    @app.get("/")
    def index():
        return render_template("index.html", max_upload_bytes=app.config["MAX_CONTENT_LENGTH"],
                               outline=[list(group) for group in predict.OUTLINE_68])

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model=service.model.path.name,
                       input_size=[service.model.image_dim, service.model.image_dim],
                       detector=service.detector_name, workers=service.workers,
                       max_upload_mb=max_upload_mb)

    @app.post("/api/landmarks")
    def landmarks():
        started = time.perf_counter()
        try:
            with service.admitted(upload_reservation(app.config["MAX_CONTENT_LENGTH"])):
                data, name = read_upload_in_time()
                record = service.process(data, name)
        except UploadTimeout as err:
            response = json_error(408, str(err))
            response.headers["Connection"] = "close"
            return response
        except predict.ModelOutputError as err:  # the server's model is at fault, not the upload
            return json_error(500, f"{err.model_path.name}: {err.fault}")
        except predict.InputError as err:
            return json_error(400, str(err))
        except Busy:
            response = json_error(503, "busy: too many requests waiting, try again shortly")
            response.headers["Retry-After"] = "1"
            response.headers["Connection"] = "close"  # its body, if any, was not read
            return response
        record["timing_ms"]["total"] = ms(time.perf_counter() - started)
        return jsonify(record)

    @app.errorhandler(413)
    def too_large(error):
        length = request.content_length
        if length is not None and length <= app.config["MAX_CONTENT_LENGTH"]:
            # Within the size limit: Werkzeug refused the form itself.
            return json_error(413, "multipart upload refused: more than "
                              f"{app.config['MAX_FORM_PARTS']} parts, or a text field over "
                              f"{app.config['MAX_FORM_MEMORY_SIZE'] / 1000:g} KB; send only the "
                              "file field 'image'")
        return json_error(413, f"upload too large: the limit is {max_upload_mb:g} MB")

    @app.errorhandler(HTTPException)
    def http_error(error):
        if not request.path.startswith("/api/"):
            return error
        response = json_error(error.code, f"{error.name}: {request.method} {request.path}")
        if getattr(error, "valid_methods", None):  # a 405 says what is allowed
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(InternalServerError)
    def internal_error(error):  # the traceback goes to the log, not to the client
        if request.path.startswith("/api/"):
            return json_error(500, "internal error while processing the image")
        return error

    @app.after_request
    def security_headers(response):
        # The page loads only its own script and style; images come from the user's file.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    return app


# ---------------------------------------------------------------------------------------
# The server: Werkzeug's threaded server with a bound on connections and a client timeout
# ---------------------------------------------------------------------------------------

class CappedReads:
    """A request's input stream whose reads return at most ``cap`` bytes at a time: after
    answering, Werkzeug throws away what the client still sends in reads of 10 MB, which
    each hold that much memory while a refused upload trickles in."""

    def __init__(self, stream, cap: int = 64 * 1024):
        self._stream, self._cap = stream, cap

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(self._cap if size is None or size < 0 or size > self._cap else size)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class TimedRequestHandler(WSGIRequestHandler):
    """Drops a client that sends nothing for ``timeout`` seconds (idle or stalled upload)."""

    timeout = DEFAULT_CLIENT_TIMEOUT_S

    def setup(self):
        super().setup()
        self.rfile = CappedReads(self.rfile)


_BUSY_BODY = b'{"error": "busy: too many connections, try again shortly", "status": 503}\n'
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class BoundedServer(ThreadedWSGIServer):
    """At most ``max_connections`` connections are served at once, each on its own thread;
    one more is answered 503 and closed at once, before anything of it is read."""

    def __init__(self, *args, max_connections: int = DEFAULT_MAX_CONNECTIONS, **kwargs):
        super().__init__(*args, **kwargs)
        self._connections = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._connections.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


def serve(app, host: str, port: int, max_connections: int = DEFAULT_MAX_CONNECTIONS,
          client_timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S) -> BoundedServer:
    """A BoundedServer of ``app`` listening on host:port; InputError naming them and the
    fault when it cannot listen there (unknown host, port in use, no permission)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise predict.InputError(f"--host {host}: cannot listen there ({getattr(err, 'strerror', None) or err})") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as err:
        listener.close()
        raise predict.InputError(f"cannot listen on {host}:{port} ({err.strerror})") from None
    handler = type("Handler", (TimedRequestHandler,), {"timeout": client_timeout_s})
    try:  # Werkzeug takes its own copy of the listening socket
        return BoundedServer(host, port, app, handler, fd=listener.fileno(), max_connections=max_connections)
    finally:
        listener.close()


positive_seconds = predict.positive_number("a number of seconds")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def port_number(text: str) -> int:
    if not (text.isdigit() and 0 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"wants a port number from 0 to 65535, got {text!r}")
    return int(text)


positive_megabytes = predict.positive_number("a size in MB")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", default=str(predict.DEFAULT_MODEL), help="a .tflite from export_tflite.py")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0: every interface, the whole network)")
    parser.add_argument("--port", type=port_number, default=5000, help="0 picks a free port")
    parser.add_argument("--detector", choices=sorted(predict.DETECTORS), default=predict.DEFAULT_DETECTOR)
    parser.add_argument("--max-upload-mb", type=positive_megabytes, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--workers", type=predict.positive_int, default=DEFAULT_WORKERS,
                        help="images processed at once (one TFLite interpreter each)")
    parser.add_argument("--max-inflight-mb", type=positive_megabytes, default=DEFAULT_MAX_INFLIGHT_MB,
                        help="all uploads held at once (read, waiting or processed); beyond: 503 "
                        "before reading (at least --max-upload-mb)")
    parser.add_argument("--max-connections", type=predict.positive_int, default=DEFAULT_MAX_CONNECTIONS,
                        help="connections served at once; beyond: 503 at once")
    parser.add_argument("--client-timeout", type=positive_seconds, default=DEFAULT_CLIENT_TIMEOUT_S,
                        help="seconds a client may send nothing (idle, or a stalled upload) before it is "
                        "disconnected")
    live_page.add_flags(parser)
    args = parser.parse_args(argv)

    try:
        live = live_page.from_args(parser, args, args.model, args.detector)
        app = create_app(args.model, args.detector, args.max_upload_mb, args.workers,
                         max_inflight_mb=args.max_inflight_mb, live=live)
        server = serve(app, args.host, args.port, args.max_connections, args.client_timeout)
    except predict.InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return predict.EXIT_BAD_INPUT
    service = app.extensions["landmarks"]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{service.model.path.name} loaded ({service.model.image_dim}x{service.model.image_dim} "
          f"input); serving on http://{host}:{server.port}/", flush=True)
    if live is not None:
        print(f"live page of {args.camera}: http://{host}:{server.port}/live", flush=True)
        live.start()
    if not is_loopback(args.host):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the "
              "page and the API (there is no login)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if live is not None:
            live.stop()
    return predict.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
