"""How long a server's first ``GET /metrics`` holds up other requests.

A fresh server (in memory, loopback, ephemeral port); one thread sends ``GET /healthz`` back
to back on its own keep-alive connection; then one ``GET /metrics`` is sent on another. The
longest ``/healthz`` round trip from the scrape on is how long the event loop was held
(prometheus_client is imported at the first scrape: ~30 ms of work, done on a thread).

    python bench/first_scrape.py --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import socket
import subprocess
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def once() -> tuple[float, float, float]:
    """(ms of the scrape, longest /healthz ms before it, longest /healthz ms from it on)."""
    port = free_port()
    cmd = ["wonderq", "serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        latencies: list[float] = []
        stop = threading.Event()

        def ping() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            while not stop.is_set():
                start = time.perf_counter()
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                latencies.append(time.perf_counter() - start)

        pinger = threading.Thread(target=ping)
        pinger.start()
        time.sleep(0.3)
        before = len(latencies)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        start = time.perf_counter()
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        scrape = time.perf_counter() - start
        assert resp.status == 200, resp.status
        time.sleep(0.2)
        stop.set()
        pinger.join()
        return scrape * 1000, max(latencies[:before]) * 1000, max(latencies[before:]) * 1000
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.runs):
        scrape, before, during = once()
        print(
            f"first scrape {scrape:.1f} ms; longest /healthz before it {before:.2f} ms, "
            f"from it on {during:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
