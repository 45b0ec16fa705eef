"""`retrieval app`: refuses to serve beyond loopback without --auth (exit 2, one line); otherwise prints the
URL, serves, and stops on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import httpx
import pytest

from app.config import AppConfig, is_loopback, parse_auth
from plumbing.errors import InputError
from tests.app.server import free_port


def run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cli", "app", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_public_host_without_auth_exits_2_with_one_line(tiny, host):
    r = run("--index", str(tiny.index), "--host", host)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--host {host}" in lines[0] and "--auth" in lines[0]


def test_missing_index_exits_2_naming_it(tmp_path):
    r = run("--index", str(tmp_path / "nope"))
    assert r.returncode == 2 and str(tmp_path / "nope") in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_auth_exits_2(tiny):
    r = run("--index", str(tiny.index), "--auth", "nopassword")
    assert r.returncode == 2 and "USER:PASS" in r.stderr


def test_loopback_rules():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "myhost"))
    assert parse_auth("me:se:cret") == ("me", "se:cret")
    assert AppConfig(index="x", host="0.0.0.0", auth=("me", "pw")).host == "0.0.0.0"  # type: ignore[arg-type]
    with pytest.raises(InputError):
        AppConfig(index="x", host="0.0.0.0")  # type: ignore[arg-type]


@pytest.mark.slow
def test_serves_then_stops_on_ctrl_c(tiny, tmp_path):
    port = free_port()
    with open(tmp_path / "stderr.txt", "w+") as err:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "app", "--index", str(tiny.index), "--port", str(port)] + ["--device", "cpu"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
            preexec_fn=_ctrl_c_default,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 180)  # the URL line, once the server is up
            line = proc.stdout.readline() if ready else "(no line within 180 s)"
            assert f"http://127.0.0.1:{port}/" in line, line + (tmp_path / "stderr.txt").read_text()
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        finally:
            proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()


def _ctrl_c_default() -> None:
    """In the child before Python starts: SIGINT back to its default, which Python turns into KeyboardInterrupt. A
    shell starts background jobs with SIGINT ignored and children inherit that, so the app would never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
