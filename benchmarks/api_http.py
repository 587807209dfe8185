"""HTTP throughput of the FHIR API as deployed (authentication on), against auth off and the ceiling.

Starts up to three servers on 127.0.0.1, each one uvicorn process with one worker:

* ``rhip`` with authentication **on** (the default of ``rhip serve``): a ``system`` account bound to
  facility ``bench-org`` (a facility's feed) is created with ``rhip users add``, its token comes from
  the real ``POST /auth/token`` (client credentials, ``system/Patient.crs``), and every request
  carries it: token check, SMART scopes, the facility write rule on creates and the SM3-chained
  audit of every access, as deployed;
* ``rhip`` with authentication **off** (``RHIP_AUTH_ENABLED=false``: no token, policy or audit), the
  API alone, for the ratio on/off;
* ``bare``: a minimal ASGI app that keeps resources in a dict (same uvicorn, same JSON library), the
  most this machine serves over HTTP, i.e. the ceiling the API is compared with.

Each ``rhip`` server has a fresh SQLite store (WAL) seeded with the same patients. ``wrk`` (Debian
package ``wrk``) then drives GET ``/fhir/Patient/{id}`` (random seeded ids), POST ``/fhir/Patient``
and a search ``GET /fhir/Patient?identifier=system|value`` (random seeded identifier, one match;
its p95 latency at ``--search-connections`` clients). The runs alternate between auth on and off
(round after round) so load drift on a shared machine hits both alike; the table gives each run,
requests per CPU-second of the server process (what one fully available core would serve) and the
ratio on/off of each round. ``--auth off`` (or ``on``) runs one mode only. ``--base-src DIR`` adds
servers running another checkout's code (``DIR`` = its ``src``), alternated with the others, for an
A/B of a change. Every run is printed with the Patients its store held before it (``store``; each
create run adds its requests, so later rounds of creates run on a larger store) and the size of the
store's write-ahead log file after it (``WAL MiB``). ``--preload N``
writes N more Patients (the create body, in groups of 16 through ``Store.create_new`` of the
server's own code, as the API's group commit does) into each store before its server starts, to
measure creates and reads on a grown store without minutes of HTTP first.
Run: ``.venv/bin/python benchmarks/api_http.py [--auth on,off] [--rounds 3] [--seconds 10]
[--preload 0] [--base-src ../other/src]``.
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

IDENTIFIER_SYSTEM = "https://rhip.example.org/fhir/id/bench"
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": IDENTIFIER_SYSTEM, "value": "B-create"}],
    "name": [{"family": "王", "given": ["芳"]}],
    "gender": "female",
    "birthDate": "1980-05-17",
    "address": [{"city": "杭州市", "district": "西湖区"}],
    "managingOrganization": {"reference": "Organization/bench-org"},
}
#: The facility the benchmark's ``system`` account writes for (its Patients name it).
ORGANIZATION = "bench-org"
ACCOUNT = "bench-connector"


def bare_app() -> Any:
    """A dict-backed ASGI app answering the read and the create of the API (the HTTP ceiling)."""
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


def _rhip_env(data_dir: Path, auth: bool, src: str | None = None) -> dict[str, str]:
    env = {**os.environ, "RHIP_DATA_DIR": str(data_dir), "RHIP_AUTH_ENABLED": "true" if auth else "false"}
    env.pop("RHIP_DATABASE_URL", None)
    if src:  # another checkout's code (A/B): its src/ ahead of the installed package
        env["PYTHONPATH"] = src
    return env


def _rhip(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def start_rhip(port: int, data_dir: Path, auth: bool, src: str | None = None) -> subprocess.Popen[bytes]:
    """``rhip serve`` on a fresh SQLite store in data_dir, authentication on or off."""
    env = {**_rhip_env(data_dir, auth, src), "RHIP_HOST": "127.0.0.1", "RHIP_PORT": str(port)}
    proc = _rhip(["serve"], env)
    _wait(f"http://127.0.0.1:{port}/fhir/metadata", proc)
    return proc


def add_account(data_dir: Path, secret: str, src: str | None = None) -> None:
    """The facility feed's ``system`` account, made the way an operator makes it (``rhip users add``)."""
    env = {**_rhip_env(data_dir, True, src), "RHIP_NEW_SECRET": secret}
    args = ["users", "add", ACCOUNT, "--role", "system", "--organization", ORGANIZATION]
    if _rhip(args, env).wait(timeout=120) != 0:
        raise SystemExit("rhip users add failed")


def fetch_token(base: str, secret: str) -> str:
    """A bearer token from the real token endpoint (client credentials, the scopes the runs need)."""
    form = {"grant_type": "client_credentials", "scope": "system/Patient.crs"}
    response = httpx.post(f"{base}/auth/token", data=form, auth=(ACCOUNT, secret), timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


#: Patients per transaction of ``--preload`` (about the API's groups under 16 connections).
PRELOAD_GROUP = 16


def preload_store(count: int) -> None:
    """Write ``count`` create bodies into the store the settings name, as the group commit does
    (run in a subprocess with the server's environment, so the server's own code writes them)."""
    from rhip.store import Store

    store = Store.from_settings()
    try:
        for start in range(0, count, PRELOAD_GROUP):
            size = min(PRELOAD_GROUP, count - start)
            store.create_new([json.loads(json.dumps(PATIENT)) for _ in range(size)])
    finally:
        store.close()


def preload(data_dir: Path, count: int, auth: bool, src: str | None) -> None:
    """``preload_store`` in a subprocess on data_dir with the server's code and settings."""
    cmd = [sys.executable, __file__, "--preload-into", str(count)]
    if subprocess.run(cmd, env=_rhip_env(data_dir, auth, src), check=False).returncode != 0:
        raise SystemExit(f"preloading {count} Patients into {data_dir} failed")


def start_bare(port: int) -> subprocess.Popen[bytes]:
    """The dict-backed ceiling app under the same uvicorn."""
    cmd = [sys.executable, __file__, "--serve-bare", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(f"http://127.0.0.1:{port}/", proc)
    return proc


def seed(base: str, count: int, headers: dict[str, str]) -> list[str]:
    """Create ``count`` patients with identifiers B-0.. B-(count-1); return their ids."""
    ids = []
    with httpx.Client(timeout=30, headers={"content-type": "application/fhir+json", **headers}) as http:
        for n in range(count):
            body = {**PATIENT, "identifier": [{"system": IDENTIFIER_SYSTEM, "value": f"B-{n}"}]}
            response = http.post(f"{base}/fhir/Patient", content=json.dumps(body))
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


#: Printed by every wrk script when the run ends: the 95th percentile of latency (µs).
_DONE = (
    "done = function(summary, latency, requests)\n"
    '  io.write(string.format("p95us %d\\n", latency:percentile(95)))\n'
    "end\n"
)


def _lua_headers(headers: dict[str, str]) -> str:
    return "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())


def _lua_get(paths: list[str], path: Path, headers: dict[str, str]) -> Path:
    table = ",".join(f'"{p}"' for p in paths)
    path.write_text(
        _lua_headers(headers) + f"local paths = {{{table}}}\n"
        "math.randomseed(7)\n"
        "request = function()\n"
        '  return wrk.format("GET", paths[math.random(#paths)])\n'
        "end\n" + _DONE
    )
    return path


def _lua_post(path: Path, headers: dict[str, str]) -> Path:
    body = json.dumps(json.dumps(PATIENT, ensure_ascii=False), ensure_ascii=False)
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.path = "/fhir/Patient"\n'
        f"wrk.body = {body}\n"
        'wrk.headers["Content-Type"] = "application/fhir+json"\n' + _lua_headers(headers) + _DONE
    )
    return path


def scripts(work: Path, name: str, ids: list[str], headers: dict[str, str]) -> dict[str, Path]:
    """The wrk script of each operation for one server."""
    searches = [f"/fhir/Patient?identifier={IDENTIFIER_SYSTEM}%7CB-{n}" for n in range(len(ids))]
    return {
        "read": _lua_get([f"/fhir/Patient/{i}" for i in ids], work / f"read_{name}.lua", headers),
        "create": _lua_post(work / f"create_{name}.lua", headers),
        "search": _lua_get(searches, work / f"search_{name}.lua", headers),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _ms(match: re.Match[str] | None) -> float:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return float(match.group(1)) * scale[match.group(2)] if match else float("nan")


def run_wrk(
    url: str, script: Path, seconds: int, connections: int, threads: int, pid: int
) -> dict[str, float]:
    """Run wrk; return requests/s, latency (ms), non-2xx count and requests per server CPU-second."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu_used = cpu_seconds(pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p95 = re.search(r"p95us (\d+)", out)
    return {
        "rps": rps,
        "requests": total,
        "latency_ms": _ms(re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)),
        "p95_ms": int(p95.group(1)) / 1000 if p95 else float("nan"),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "errors": float(bad.group(1)) if bad else 0.0,
        "per_cpu_s": total / cpu_used if cpu_used > 0 else float("nan"),
        "load": os.getloadavg()[0],
    }


class Server:
    """One running server under test: its name, base URL, process and wrk scripts."""

    def __init__(
        self, name: str, work: Path, seed_count: int, base_src: str | None, preloaded: int = 0
    ) -> None:
        self.name = name
        self.resources = seed_count + (0 if name == "bare" else preloaded)  # Patients in its store
        self.data = work / name
        src = base_src if name.startswith("base-") else None
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        data = self.data
        headers: dict[str, str] = {}
        if name == "bare":
            self.proc = start_bare(port)
        elif name.endswith("-on"):
            secret = uuid.uuid4().hex
            add_account(data, secret, src)
            if preloaded:
                preload(data, preloaded, True, src)
            self.proc = start_rhip(port, data, True, src)
            headers = {"Authorization": f"Bearer {fetch_token(self.base, secret)}"}
        else:
            if preloaded:
                preload(data, preloaded, False, src)
            self.proc = start_rhip(port, data, False, src)
        self.scripts = scripts(work, name, seed(self.base, seed_count, headers), headers)

    def wal_mib(self) -> float:
        """Size of the store's write-ahead log file now (MiB; 0 for the ceiling app)."""
        return (
            sum(p.stat().st_size for p in self.data.glob("*.sqlite-wal")) / 2**20
            if self.data.is_dir()
            else 0.0
        )

    def stop(self) -> None:
        """Terminate the server and wait for it (flushes the audit queue of an auth-on server)."""
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _server_names(args: argparse.Namespace) -> list[str]:
    names = []
    for name in args.servers.split(","):
        if name == "rhip":
            for mode in args.auth.split(","):
                names += [f"rhip-{mode}", f"base-{mode}"] if args.base_src else [f"rhip-{mode}"]
        elif name == "bare":
            names.append(name)
        else:
            raise SystemExit(f"unknown server {name!r}: bare or rhip")
    for mode in args.auth.split(","):
        if mode not in ("on", "off"):
            raise SystemExit(f"--auth takes on, off or on,off, not {mode!r}")
    return names


Results = dict[tuple[str, str], list[dict[str, float]]]


def measure(servers: list[Server], args: argparse.Namespace) -> Results:
    """Alternate the servers run after run, ``--rounds`` times per operation."""
    results: Results = {}
    for op in args.ops.split(","):
        for _ in range(args.rounds):
            for server in servers:
                if op == "search" and server.name == "bare":
                    continue  # the ceiling app has no search
                search = op == "search"
                conns, threads = (args.search_connections, 1) if search else (args.connections, args.threads)
                row = run_wrk(server.base, server.scripts[op], args.seconds, conns, threads, server.proc.pid)
                row["store"] = server.resources
                row["wal_mib"] = server.wal_mib()
                if op == "create":
                    server.resources += int(row["requests"] - row["errors"])
                results.setdefault((server.name, op), []).append(row)
    return results


def _ratio(results: Results, op: str, key: str, pair: tuple[str, str] = ("rhip-on", "rhip-off")) -> str:
    on, off = results.get((pair[0], op)), results.get((pair[1], op))
    if not on or not off:
        return ""
    ratios = [a[key] / b[key] for a, b in zip(on, off, strict=True) if b[key]]
    return " ".join(f"{r:.2f}" for r in ratios)


def report(results: Results, args: argparse.Namespace) -> None:
    """Print every run, and the on/off ratio of each round."""
    conns = f"{args.connections} connections ({args.search_connections} for search)"
    print(f"wrk {args.threads} threads, {conns},")
    print(f"{args.seconds}s per run, {args.rounds} rounds alternated; one uvicorn worker per server")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    head = f"{'server':<10}{'operation':<10}{'req/s':>9}{'mean ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    print(head + f"{'non-2xx':>9}{'req/CPU-s':>11}{'load':>6}{'store':>9}{'WAL MiB':>9}")
    for (name, op), rows in results.items():
        for row in rows:
            print(
                f"{name:<10}{op:<10}{row['rps']:>9.0f}{row['latency_ms']:>9.2f}{row['p95_ms']:>9.2f}"
                f"{row['p99_ms']:>9.2f}{int(row['errors']):>9}{row['per_cpu_s']:>11.0f}{row['load']:>6.1f}"
                f"{int(row['store']):>9}{row['wal_mib']:>9.0f}"
            )
    pairs = [("rhip-on", "rhip-off")]
    pairs += [(f"rhip-{m}", f"base-{m}") for m in args.auth.split(",")] if args.base_src else []
    for op in args.ops.split(","):
        keys = {"p95": "p95_ms"} if op == "search" else {"req/s": "rps", "req/CPU-s": "per_cpu_s"}
        for pair in pairs:
            label = "on/off" if pair == pairs[0] else f"{pair[0]} / {pair[1]}"
            for shown, key in keys.items():
                ratios = _ratio(results, op, key, pair)
                if ratios:  # both servers of the pair ran
                    print(f"{op} {shown} {label} per round: {ratios}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth", default="on,off", help="on, off, or on,off (both, alternated; default)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each operation per server, alternated")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (reads, creates)")
    parser.add_argument("--search-connections", type=int, default=1, help="concurrent connections (search)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--seed", type=int, default=500, help="patients created over HTTP before the runs")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        help="patients written into each rhip store before its server starts",
    )
    parser.add_argument("--servers", default="bare,rhip", help="comma list of servers to run (bare, rhip)")
    parser.add_argument("--ops", default="read,create,search", help="comma list of operations")
    parser.add_argument(
        "--base-src", help="A/B: also run base-on/base-off servers from this checkout's src/ (PYTHONPATH)"
    )
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--preload-into", type=int, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Start the servers, alternate the runs and print the table."""
    args = _parser().parse_args()
    if args.preload_into is not None:
        preload_store(args.preload_into)
        return
    if args.preload < 0:
        raise SystemExit(f"--preload takes a number of Patients >= 0, not {args.preload}")
    if args.serve_bare:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.serve_bare, log_level="warning", access_log=False)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    names = _server_names(args)
    with tempfile.TemporaryDirectory() as tmp:
        servers: list[Server] = []
        try:
            for name in names:
                servers.append(Server(name, Path(tmp), args.seed, args.base_src, args.preload))
            results = measure(servers, args)
        finally:
            for server in servers:
                server.stop()
    report(results, args)


if __name__ == "__main__":
    main()
