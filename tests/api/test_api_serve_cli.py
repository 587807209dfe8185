"""``rhip serve`` starts uvicorn on the configured host and port, says where, and serves the FHIR API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
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


@pytest.mark.parametrize(
    ("rows", "said"),
    [
        ("loinc,days,group,group_zh\n718-7,soon,complete blood count,血常规\n", "line 2: days"),
        (
            "code,days,group,group_zh\nCT,90,computed tomography,CT\nMRI,90,magnetic resonance,磁共振\n",
            "line 3: code",
        ),
    ],
)
def test_rhip_serve_refuses_a_bad_recognition_windows_file_before_listening(
    tmp_path: Path, rows: str, said: str
) -> None:
    """A bad file named in the settings (a lab row or an imaging row) stops the start, naming the
    file and line, rather than failing the first `$prior-results` request with a 500."""
    bad = tmp_path / "windows.csv"
    bad.write_text(rows, encoding="utf-8")
    port = free_port()
    env = {
        **os.environ,
        "RHIP_DATA_DIR": str(tmp_path),
        "RHIP_PORT": str(port),
        "RHIP_RECOGNITION_WINDOWS_FILE": str(bad),
    }
    env.pop("RHIP_DATABASE_URL", None)
    cmd = [sys.executable, "-c", "from rhip.cli import main; main()", "serve"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{bad} {said}" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "RHIP API on" not in done.stdout
