"""A2A off the gateway's MQTT path: a quiet board's request latency alone and while an A2A
client floods the fleet's A2A server with 64 MiB POSTs (issue 17: three such POSTs took the
gateway from 61 to 302 MB and a board's p50 from 2.5 ms to 1.4 s when A2A shared its loop).

Side by side in one run, against `microfang gateway` (its own process, [a2a] served by its child
process microfang.a2aserve) on a real Mosquitto: the quiet board on the wire asks one echo request
at a time (bench/fleet_flood.py) alone, then while 6 clients at once keep POSTing 64 MiB bodies
(announced with Content-Length, and chunked with no length), each answered 413: paced, six
POSTs a second (the attack's shape), and back to back as fast as they are refused. The flooding
client runs on the same 2 cores at the same priority (a real attacker's CPU is elsewhere); the
A2A process runs at nice +10 (a2aserve.NICE). Goal: the quiet board's p50 within 2x of alone. Also: the statuses the flood got, and the resident memory
of the gateway and the A2A process before and after.

    python bench/bench_a2a.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import select
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fleet_flood
from brokers import Mosquitto
from fleet_wire import register, stop
from results_file import save

from microfang.broker import free_port

BODY = 64 << 20  # the attack's body
PIECE = 1 << 20
CLIENTS = 6
TOKEN = "bench-a2a-token"


def _post(port: int, chunked: bool) -> str:
    """One 64 MiB POST sent as a client that stops when the server answers early; its status."""
    head = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {TOKEN}",
            "Content-Type: application/json", "A2A-Version: 1.0",
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"]
    piece = (f"{PIECE:x}\r\n".encode() + b" " * PIECE + b"\r\n") if chunked else b" " * PIECE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for _ in range(BODY // PIECE):
                if select.select([conn], [], [], 0)[0]:
                    break  # answered before the whole body was sent
                conn.sendall(piece)
            answer = conn.recv(4096).decode(errors="replace")
        return answer.split()[1] if answer.startswith("HTTP/") else "closed"
    except OSError as e:
        return type(e).__name__


def _flood(port: int, chunked: bool, paced: bool, ready: Any, posts: Any) -> None:
    """CLIENTS threads POSTing 64 MiB bodies until the process is ended: `paced`, six at once
    each second (the attack's shape); else back to back as fast as they are refused. `posts`
    counts them."""
    import threading

    def client() -> None:
        while True:
            start = time.monotonic()
            _post(port, chunked)
            with posts.get_lock():
                posts.value += 1
            if paced:
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))

    for _ in range(CLIENTS):
        threading.Thread(target=client, daemon=True).start()
    ready.set()
    threading.Event().wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_gateway(port: int, where: str, http: int, a2a: int, folder: Path) -> Any:
    import subprocess

    token = folder / "a2a.token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    token.chmod(0o600)
    config = folder / "gateway.toml"
    config.write_text(f'[a2a]\nport = {a2a}\nexpose = ["quiet00000/a1"]\ntoken_file = "{token}"\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "microfang", "gateway", "--config", str(config), "--broker",
                             f"mqtt://127.0.0.1:{port}", "--store", where, "--name", "a2a-bench", "--http", str(http),
                             "--memory", "none", "--rate", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if "A2A on" not in line:
        raise RuntimeError(f"gateway did not start with A2A: {line!r}")
    return proc


def measure(port: int, folder: Path, asks: int) -> dict[str, Any]:
    where = str(folder / "a2a.db")
    keys = register(where, "quiet", 1)
    http, a2a = free_port(), free_port()
    gateway = start_gateway(port, where, http, a2a, folder)
    health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=10).read())
    pids = {"gateway": gateway.pid, "a2a": health["a2a"]["pid"]}
    figures: dict[str, Any] = {}
    try:
        asyncio.run(fleet_flood._quiet(port, keys, http, 0, 100))  # warm-up
        figures["alone"] = asyncio.run(fleet_flood._quiet(port, keys, http, 100, asks))
        figures["rss_mb_before"] = {name: _rss_mb(pid) for name, pid in pids.items()}
        ctx = multiprocessing.get_context("spawn")
        floods = [(f"{'paced' if paced else 'unpaced'}_{'chunked' if chunked else 'content_length'}", chunked, paced)
                  for paced in (True, False) for chunked in (False, True)]
        for n, (name, chunked, paced) in enumerate(floods, 1):
            ready, posts = ctx.Event(), ctx.Value("i", 0)
            proc = ctx.Process(target=_flood, args=(a2a, chunked, paced, ready, posts), daemon=True)
            proc.start()
            ready.wait(30)
            time.sleep(1)  # the flood under way
            first, start = posts.value, time.monotonic()
            row = asyncio.run(fleet_flood._quiet(port, keys, http, 100 + n * asks, asks))
            row["posts_per_s"] = (posts.value - first) / (time.monotonic() - start)
            row["rss_mb_during"] = {k: _rss_mb(pid) for k, pid in pids.items()}
            proc.terminate()
            proc.join(10)
            row["p50_vs_alone"] = row["p50_ms"] / figures["alone"]["p50_ms"]
            figures[name] = row
        figures["statuses"] = _statuses(a2a)
    finally:
        stop([gateway])
    return figures


def _statuses(port: int) -> dict[str, str]:
    """What one POST of each kind gets (the flood's own counts die with its process)."""
    return {"content_length_64MiB": _post(port, False), "chunked_64MiB": _post(port, True)}


def report(figures: dict[str, Any]) -> None:
    alone = figures["alone"]
    print(f"quiet board alone: p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.1f} ms; RSS before: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in figures["rss_mb_before"].items()))
    for name, row in figures.items():
        if not isinstance(row, dict) or "posts_per_s" not in row:
            continue
        print(f"  while {CLIENTS} A2A clients POST 64 MiB ({name}, {row['posts_per_s']:.0f} POSTs/s): "
              f"{row['answered']}/{row['asked']} answered, p50 {row['p50_ms']:.2f} ms ({row['p50_vs_alone']:.2f}x "
              f"alone, goal <= 2x), p99 {row['p99_ms']:.1f} ms; RSS "
              + ", ".join(f"{k} {v:.0f} MB" for k, v in row["rss_mb_during"].items()))
    print(f"  one more POST of each after the flood: {figures['statuses']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            figures = measure(broker.port, Path(tmp), 100 if args.quick else fleet_flood.ASKS)
        finally:
            broker.stop()
    report(figures)
    save("a2a", clients=CLIENTS, body_bytes=BODY, **figures)


if __name__ == "__main__":
    main()
