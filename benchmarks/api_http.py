"""HTTP throughput of the FHIR API: reads and creates driven by wrk, against the machine's ceiling.

Starts two servers on 127.0.0.1, each one uvicorn process with one worker:

* ``rhip``: the real API exactly as ``rhip serve`` runs it (authentication off), over a fresh
  SQLite store (WAL); creates are persisted and indexed, reads come from the store.
* ``bare``: a minimal ASGI app that keeps resources in a dict (same uvicorn, same JSON library), the
  most this machine serves over HTTP, i.e. the ceiling the API is compared with.

Then runs ``wrk`` (Debian package ``wrk``) for GET ``/fhir/Patient/{id}`` (random ids from a seeded
set) and POST ``/fhir/Patient`` on each and prints requests/s, latency and the ratio to the
ceiling. On a shared machine the rate depends on how much CPU the server gets, so the table also
reports requests per CPU-second of the server process (what one fully available core would serve).
Run: ``.venv/bin/python benchmarks/api_http.py [--seconds 10] [--connections 16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "https://rhip.example.org/fhir/id/bench", "value": "B-1"}],
    "name": [{"family": "王", "given": ["芳"]}],
    "gender": "female",
    "birthDate": "1980-05-17",
    "address": [{"city": "杭州市", "district": "西湖区"}],
}


def bare_app() -> Any:
    """A dict-backed ASGI app answering the same two requests as the API (the HTTP ceiling)."""
    import orjson

    store: dict[str, bytes] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, out = 404, b'{"resourceType":"OperationOutcome"}'
        if scope["method"] == "POST" and path == "/fhir/Patient":
            resource = orjson.loads(body)
            resource["id"] = uuid.uuid4().hex
            out = orjson.dumps(resource)
            store[resource["id"]] = out
            status = 201
        elif scope["method"] == "GET" and path.startswith("/fhir/Patient/"):
            found = store.get(path.rsplit("/", 1)[1])
            if found is not None:
                status, out = 200, found
        headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {url}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server did not start: {url}")


def start_rhip(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    """``rhip serve`` on a fresh SQLite store in data_dir."""
    env = {**os.environ, "RHIP_DATA_DIR": str(data_dir), "RHIP_HOST": "127.0.0.1", "RHIP_PORT": str(port)}
    env["RHIP_AUTH_ENABLED"] = "false"  # the API alone; authentication has its own benchmark
    env.pop("RHIP_DATABASE_URL", None)
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", "serve"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(f"http://127.0.0.1:{port}/fhir/metadata", proc)
    return proc


def start_bare(port: int) -> subprocess.Popen[bytes]:
    """The dict-backed ceiling app under the same uvicorn."""
    cmd = [sys.executable, __file__, "--serve-bare", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(f"http://127.0.0.1:{port}/", proc)
    return proc


def seed(base: str, count: int) -> list[str]:
    """Create ``count`` patients; return their ids."""
    ids = []
    with httpx.Client(timeout=30, headers={"content-type": "application/fhir+json"}) as http:
        for _ in range(count):
            response = http.post(f"{base}/fhir/Patient", content=json.dumps(PATIENT))
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def _lua_get(ids: list[str], path: Path) -> Path:
    table = ",".join(f'"{i}"' for i in ids)
    path.write_text(
        f"local ids = {{{table}}}\n"
        "math.randomseed(7)\n"
        "request = function()\n"
        '  return wrk.format("GET", "/fhir/Patient/" .. ids[math.random(#ids)])\n'
        "end\n"
    )
    return path


def _lua_post(path: Path) -> Path:
    body = json.dumps(json.dumps(PATIENT, ensure_ascii=False), ensure_ascii=False)
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.path = "/fhir/Patient"\n'
        f"wrk.body = {body}\n"
        'wrk.headers["Content-Type"] = "application/fhir+json"\n'
    )
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str, script: Path, seconds: int, connections: int, threads: int, pid: int
) -> dict[str, float]:
    """Run wrk; return requests/s, latency (ms), non-2xx count and requests per server CPU-second."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu_used = cpu_seconds(pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = float(lat.group(1)) * scale[lat.group(2)] if lat else float("nan")
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "latency_ms": latency,
        "p99_ms": p99_ms,
        "errors": float(bad.group(1)) if bad else 0.0,
        "per_cpu_s": total / cpu_used if cpu_used > 0 else float("nan"),
    }


def main() -> None:
    """Benchmark both servers and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seed", type=int, default=500, help="patients created before the read runs")
    parser.add_argument("--servers", default="bare,rhip", help="comma list of servers to run (bare, rhip)")
    parser.add_argument("--ops", default="read,create", help="comma list of operations (read, create)")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning", access_log=False)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.servers.split(","):
            port = _free_port()
            proc = start_bare(port) if name == "bare" else start_rhip(port, work / "data")
            try:
                base = f"http://127.0.0.1:{port}"
                ids = seed(base, args.seed)
                get = _lua_get(ids, work / f"get_{name}.lua")
                post = _lua_post(work / "post.lua")
                scripts = {"read": get, "create": post}
                for op in args.ops.split(","):
                    results[(name, op)] = run_wrk(
                        base, scripts[op], args.seconds, args.connections, args.threads, proc.pid
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(
        f"wrk {args.threads} threads, {args.connections} connections, {args.seconds}s per run; "
        "one uvicorn worker"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    head = f"{'server':<8}{'operation':<10}{'req/s':>10}{'mean ms':>10}{'p99 ms':>10}"
    print(head + f"{'non-2xx':>9}{'vs bare':>9}{'req/CPU-s':>11}")
    for (name, op), row in results.items():
        bare = results.get(("bare", op))
        ratio = row["rps"] / bare["rps"] if bare else float("nan")
        print(
            f"{name:<8}{op:<10}{row['rps']:>10.0f}{row['latency_ms']:>10.2f}{row['p99_ms']:>10.2f}"
            f"{int(row['errors']):>9}{ratio:>9.2f}{row['per_cpu_s']:>11.0f}"
        )


if __name__ == "__main__":
    main()
