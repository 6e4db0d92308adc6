"""Load check for app.py: many concurrent requests on loopback, latency percentiles.

    python -m benchmarks.web_api                 # 200 requests, 8 at a time, imgs/test_image.jpeg
    python -m benchmarks.web_api -n 500 -c 16 --workers 4 --json out/bench_app.json
    python -m benchmarks.web_api --python .venv-pi/bin/python  # the server in the Pi environment

Starts ``app.py`` as a subprocess on 127.0.0.1 (a free port), sends warm-up requests, then
the measured ones, and checks every answer: HTTP 200 and the same faces as the first.
Bounded: at most --requests requests and --time-limit seconds. Exit status 1 if any failed.

    python -m benchmarks.web_api --load uploads -c 120 --upload-mb 13 --rate-mbps 2   # slow big uploads
    python -m benchmarks.web_api --load uploads -c 4 --image big80mp.jpg             # 4 large photos at once
    python -m benchmarks.web_api --load idle -c 1000                                  # connections that send nothing

``--load`` measures the server's memory instead: -c clients at once, each once, on raw
sockets (a client that gets an answer before it has sent its whole body stops sending, as
browsers and curl do); the server's peak resident memory (VmHWM) and thread count are read
from /proc while they run. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.landmarks import describe_machine

REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO_DIR / "imgs" / "test_image.jpeg"


def multipart_body(data: bytes, filename: str, field: str = "image") -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data upload of one file, as a browser sends it."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str, timeout: float) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def start_server(python: str, model: str | None, workers: int, timeout: float = 120.0,
                 app: str = str(REPO_DIR / "app.py"), extra=()):
    """`python app.py --port 0` on loopback: (process, base URL). The app prints its URL."""
    command = [python, app, "--host", "127.0.0.1", "--port", "0",
               "--workers", str(workers)] + (["--model", model] if model else []) + list(extra)
    process = subprocess.Popen(command, cwd=REPO_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            seen.append(line)
            found = re.search(r"serving on (http://\S+/)", line)
            if found:
                return process, found.group(1)
    process.kill()
    process.wait()
    raise RuntimeError(f"app.py did not start within {timeout:.0f} s: {''.join(seen)!r}")


def server_memory(pid: int) -> dict:
    """The server process's resident memory now and at its peak (MB) and its thread count."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024,
            "threads": int(fields["Threads"])}


def raw_upload(port: int, body: bytes, content_type: str, rate_bytes_s: float, timeout: float) -> dict:
    """POST ``body`` on a raw socket at about ``rate_bytes_s`` (0: as fast as possible),
    stopping as soon as the server answers: status, bytes sent, seconds to the answer."""
    started = time.monotonic()
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(f"POST /api/landmarks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                               f"{content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            view, chunk = memoryview(body), 64 * 1024
            while sent < len(body):
                if select.select([connection], [], [], 0)[0]:
                    break  # answered early (503, 413): stop sending
                sent += connection.send(view[sent:sent + chunk])
                if rate_bytes_s:
                    time.sleep(max(0.0, started + sent / rate_bytes_s - time.monotonic()))
            connection.settimeout(timeout)
            answer = b""
            while b"\r\n" not in answer:
                data = connection.recv(65536)
                if not data:
                    break
                answer += data
        status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else "closed"
    except OSError as err:
        status = type(err).__name__
    return {"status": status, "sent_fraction": sent / len(body), "seconds": time.monotonic() - started}


def run_memory_load(args, process, base_url: str) -> int:
    """--load uploads|idle: the server's memory and threads under -c clients at once."""
    port = int(base_url.rstrip("/").rsplit(":", 1)[1])
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(server_memory(process.pid))
            time.sleep(0.05)

    before = server_memory(process.pid)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    if args.load == "idle":
        connections = []
        for _ in range(args.concurrency):
            try:
                connections.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:
                break
        time.sleep(1.0)
        held = server_memory(process.pid)
        answered = sum(bool(select.select([c], [], [], 0)[0]) for c in connections)
        deadline = time.monotonic() + args.time_limit
        while time.monotonic() < deadline and server_memory(process.pid)["threads"] > before["threads"]:
            time.sleep(0.5)
        dropped_after = time.monotonic() - started
        for connection in connections:
            connection.close()
        results = {"opened": len(connections), "answered_at_once": answered, "threads_while_held": held["threads"],
                   "seconds_until_threads_back": round(dropped_after, 1)}
    else:
        if args.upload_mb:
            body, content_type = os.urandom(int(args.upload_mb * 2**20)), "image/jpeg"  # not a photo: 400 once read
        else:
            body, content_type = Path(args.image).read_bytes(), "image/jpeg"
        with ThreadPoolExecutor(args.concurrency) as pool:
            answers = list(pool.map(lambda _: raw_upload(port, body, content_type, args.rate_mbps * 2**20,
                                                         args.time_limit), range(args.concurrency)))
        statuses = sorted({str(a["status"]) for a in answers})
        results = {"uploads": len(answers), "upload_mb": round(len(body) / 2**20, 2),
                   "rate_mbps": args.rate_mbps or None,
                   "statuses": {s: sum(str(a["status"]) == s for a in answers) for s in statuses},
                   "refused_503_after_sending_mean": round(float(np.mean(
                       [a["sent_fraction"] for a in answers if a["status"] == 503] or [0])), 3),
                   "wall_s": round(time.monotonic() - started, 1)}
    stop.set()
    sampler.join(5)
    after = server_memory(process.pid)
    figures = {"load": args.load, "clients": args.concurrency, **results,
               "server_rss_mb_before": round(before["rss_mb"]), "server_peak_rss_mb": round(after["peak_rss_mb"]),
               "server_threads_peak": max(s["threads"] for s in samples + [after]),
               "server_rss_mb_after": round(after["rss_mb"]), "machine": describe_machine()}
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web_api",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("-n", "--requests", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument("--model", help="passed to app.py (default: its default model)")
    parser.add_argument("--workers", type=int, default=2, help="app.py --workers")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs app.py")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="stop sending after this many seconds")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--load", choices=("uploads", "idle"),
                        help="measure the server's memory under -c clients at once instead (see above)")
    parser.add_argument("--upload-mb", type=float, default=0.0,
                        help="--load uploads: send this many MB of random bytes instead of --image")
    parser.add_argument("--rate-mbps", type=float, default=0.0,
                        help="--load uploads: each client sends this many MB/s (0: as fast as it can)")
    parser.add_argument("--app", default=str(REPO_DIR / "app.py"), help="the app.py to serve")
    parser.add_argument("--app-args", default="", help="more arguments for app.py, e.g. '--max-connections 32'")
    args = parser.parse_args(argv)
    if args.load:
        process, base_url = start_server(args.python, args.model, args.workers, app=args.app,
                                         extra=args.app_args.split())
        try:
            return run_memory_load(args, process, base_url)
        finally:
            process.terminate()
            process.wait(timeout=30)

    data = Path(args.image).read_bytes()
    body, content_type = multipart_body(data, Path(args.image).name)
    process, base_url = start_server(args.python, args.model, args.workers)
    url = base_url + "api/landmarks"
    try:
        with urllib.request.urlopen(base_url + "healthz", timeout=30) as response:
            health = json.loads(response.read())
        status, reference = post(url, body, content_type, timeout=60)
        if status != 200:
            print(f"error: {args.image}: HTTP {status}: {reference.get('error')}", file=sys.stderr)
            return 1
        with ThreadPoolExecutor(args.workers) as pool:  # warm-up: every worker builds its interpreter
            list(pool.map(lambda _: post(url, body, content_type, 60), range(args.workers)))

        deadline = time.monotonic() + args.time_limit

        def one(_):
            if time.monotonic() > deadline:
                return None
            started = time.perf_counter()
            try:
                status, record = post(url, body, content_type, timeout=60)
            except (OSError, ValueError) as err:
                return time.perf_counter() - started, f"{type(err).__name__}: {err}", None
            elapsed = time.perf_counter() - started
            if status != 200:
                return elapsed, f"HTTP {status}: {record.get('error')}", None
            if record.get("faces") != reference["faces"]:
                return elapsed, "faces differ from the first answer", None
            return elapsed, None, record["timing_ms"]["total"]

        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = [r for r in pool.map(one, range(args.requests)) if r is not None]
        wall = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)

    if not results:
        print(f"error: no request sent within --time-limit {args.time_limit:g} s", file=sys.stderr)
        return 1
    latency_ms = np.array([r[0] for r in results]) * 1000
    errors = [r[1] for r in results if r[1]]
    server_ms = np.array([r[2] for r in results if r[2] is not None])
    figures = {
        "requests": len(results), "not_sent": args.requests - len(results),
        "concurrency": args.concurrency, "server_workers": args.workers, "errors": len(errors),
        "p50_ms": round(float(np.percentile(latency_ms, 50)), 1),
        "p95_ms": round(float(np.percentile(latency_ms, 95)), 1),
        "max_ms": round(float(latency_ms.max()), 1),
        "server_p50_ms": round(float(np.percentile(server_ms, 50)), 1) if len(server_ms) else None,
        "throughput_per_s": round(len(results) / wall, 2), "wall_s": round(wall, 1),
        "image": Path(args.image).name, "width": reference["width"], "height": reference["height"],
        "faces": len(reference["faces"]), "model": health["model"], "machine": describe_machine(),
        "python": args.python,
    }
    print(f"{figures['requests']} requests of {figures['image']} ({figures['width']}x"
          f"{figures['height']}, {figures['faces']} face(s)), concurrency {args.concurrency}, "
          f"app.py --workers {args.workers}, model {figures['model']}")
    print(f"latency ms: p50 {figures['p50_ms']}  p95 {figures['p95_ms']}  max {figures['max_ms']}"
          f"  (server-side p50 {figures['server_p50_ms']})")
    print(f"throughput: {figures['throughput_per_s']} requests/s over {figures['wall_s']} s; "
          f"errors: {len(errors)}" + (f"; not sent (time limit): {figures['not_sent']}"
                                      if figures["not_sent"] else ""))
    print(f"machine: {figures['machine']}")
    for message in sorted(set(errors)):
        print(f"error: {errors.count(message)} x {message}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
