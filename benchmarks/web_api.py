"""Load check for app.py: many concurrent requests on loopback, latency percentiles.

    python -m benchmarks.web_api                 # 200 requests, 8 at a time, imgs/test_image.jpeg
    python -m benchmarks.web_api -n 500 -c 16 --workers 4 --json out/bench_app.json
    python -m benchmarks.web_api --python .venv-pi/bin/python  # the server in the Pi environment

Starts ``app.py`` as a subprocess on 127.0.0.1 (a free port), sends warm-up requests, then
the measured ones, and checks every answer: HTTP 200 and the same faces as the first.
Bounded: at most --requests requests and --time-limit seconds. Exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import subprocess
import sys
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


def start_server(python: str, model: str | None, workers: int, timeout: float = 120.0):
    """`python app.py --port 0` on loopback: (process, base URL). The app prints its URL."""
    command = [python, str(REPO_DIR / "app.py"), "--host", "127.0.0.1", "--port", "0",
               "--workers", str(workers)] + (["--model", model] if model else [])
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
    args = parser.parse_args(argv)

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
