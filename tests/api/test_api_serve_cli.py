"""``rhip serve`` starts uvicorn on the configured host and port, says where, and serves the FHIR API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from api_testkit import RAW_NON_ASCII, exchange

from rhip_testkit import free_port


def test_rhip_serve_answers_metadata(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RHIP_DATA_DIR": str(tmp_path), "RHIP_PORT": str(port), "RHIP_HOST": "127.0.0.1"}
    env.pop("RHIP_DATABASE_URL", None)
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", "serve"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert response is not None, (
            proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
        )
        assert response.status_code == 200
        assert response.json()["implementation"]["url"] == f"http://127.0.0.1:{port}/fhir"
        assert (tmp_path / "rhip.sqlite").exists()
        status, headers, _ = exchange(f"http://127.0.0.1:{port}", RAW_NON_ASCII)
        assert (status, headers["content-type"].split(";")[0]) == (400, "application/fhir+json")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    proc.stdout.close()
    # It said nothing at all while it served (uvicorn logs at 'warning' only).
    base = f"http://127.0.0.1:{port}"
    assert f"RHIP API on {base}/fhir (OpenAPI docs: {base}/docs); data directory {tmp_path};" in output
