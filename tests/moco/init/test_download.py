"""moco.init.download and moco.init.pretrained against a local HTTP server on 127.0.0.1 (nothing leaves the machine):
a complete download, a resume from a partial .part with a Range request, a server that ignores ranges,
digest mismatches refused, and the offline path failing with one line that gives the URL and --init FILE."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import moco.init.pretrained as pretrained
from moco.init.download import DownloadError, download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        s = self.server
        rng = self.headers.get("Range")
        s.ranges.append(rng)
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng and s.honour_range else 0
        if start >= len(s.payload) and rng and s.honour_range:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(s.payload)}")
            self.end_headers()
            return
        body = s.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(s.payload) - 1}/{len(s.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if s.cut_after is not None:  # announce everything, send part, hang up
            body, s.cut_after = body[: s.cut_after], None
        self.wfile.write(body)
        s.sent += len(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    payload: bytes = PAYLOAD
    honour_range: bool = True
    cut_after: int | None = None
    sent: int = 0
    ranges: list[str | None]


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.ranges = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/weights.pth.tar"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "cache" / "w.pth.tar"
    got = download(
        url_of(server), dest, sha256=sha(PAYLOAD), progress=lambda stage, d, t, status="": seen.append((d, t))
    )
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "cache" / "w.pth.tar.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and seen[0][0] == 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # progress only moves forward
    assert server.ranges == [None]


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    dest = tmp_path / "w.pth.tar"
    server.cut_after = 300_000
    with pytest.raises(DownloadError, match="run again to resume") as e:
        download(url_of(server), dest, sha256=sha(PAYLOAD))
    assert "\n" not in str(e.value) and url_of(server) in str(e.value)
    part = tmp_path / "w.pth.tar.part"
    assert part.read_bytes() == PAYLOAD[:300_000] and not dest.exists()
    server.sent = 0
    download(url_of(server), dest, sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.ranges[-1] == "bytes=300000-"
    assert server.sent == len(PAYLOAD) - 300_000  # only the missing bytes travelled


def test_resume_from_a_part_file_already_complete(server, tmp_path):
    (tmp_path / "w.pth.tar.part").write_bytes(PAYLOAD)  # killed after the last byte, before the rename
    dest = download(url_of(server), tmp_path / "w.pth.tar", sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_a_part_file_longer_than_the_file_is_deleted(server, tmp_path):
    part = tmp_path / "w.pth.tar.part"
    part.write_bytes(PAYLOAD + b"junk")
    with pytest.raises(DownloadError, match="larger than the file"):
        download(url_of(server), tmp_path / "w.pth.tar")
    assert not part.exists()
    assert download(url_of(server), tmp_path / "w.pth.tar", sha256=sha(PAYLOAD)).read_bytes() == PAYLOAD


def test_a_server_that_ignores_ranges_restarts_cleanly(server, tmp_path):
    server.honour_range = False
    (tmp_path / "w.pth.tar.part").write_bytes(b"x" * 1000)  # not even the right bytes
    dest = download(url_of(server), tmp_path / "w.pth.tar", sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_digest_mismatch_is_refused_and_deleted(server, tmp_path, kind):
    dest = tmp_path / "w.pth.tar"
    wrong = {"sha256": sha(b"other"), "md5_prefix": ""} if kind == "sha256" else {"sha256": "", "md5_prefix": "0" * 8}
    with pytest.raises(DownloadError, match=f"{kind} .* is not the expected") as e:
        download(url_of(server), dest, **wrong)
    assert "\n" not in str(e.value)
    assert not dest.exists() and not (tmp_path / "w.pth.tar.part").exists()


def test_md5_prefix_as_published_is_accepted(server, tmp_path):
    prefix = hashlib.md5(PAYLOAD).hexdigest()[:8]
    assert download(url_of(server), tmp_path / "w.pth.tar", md5_prefix=prefix).read_bytes() == PAYLOAD


def unreachable_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/moco_v2_800ep_pretrain.pth.tar"


def test_offline_named_checkpoint_fails_with_one_line(tmp_path, monkeypatch):
    url = unreachable_url()
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    entry = dataclasses.replace(pretrained.PRETRAINED["moco-v2-800ep"], url=url)
    monkeypatch.setitem(pretrained.PRETRAINED, "moco-v2-800ep", entry)
    with pytest.raises(DownloadError) as e:
        pretrained.fetch_pretrained("moco-v2-800ep", timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and "moco-v2-800ep" in msg and url in msg and "--init FILE" in msg and "unreachable" in msg
    assert not pretrained.cached_path("moco-v2-800ep").exists()


def test_named_checkpoint_downloads_into_the_cache_once(server, tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    entry = dataclasses.replace(
        pretrained.PRETRAINED["moco-v1-200ep"], url=url_of(server), sha256=sha(PAYLOAD), md5_prefix=""
    )
    monkeypatch.setitem(pretrained.PRETRAINED, "moco-v1-200ep", entry)
    path = pretrained.resolve_init("moco-v1-200ep")
    assert path == tmp_path / "weights" / "weights.pth.tar" and path.read_bytes() == PAYLOAD
    assert pretrained.resolve_init("moco-v1-200ep") == path and server.ranges == [None]  # cached: no request


def test_weights_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv(pretrained.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.weights_dir() == tmp_path / "xdg" / "retrieval" / "weights"
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp_path / "mine"))
    assert pretrained.weights_dir() == tmp_path / "mine"
    assert pretrained.resolve_init(str(tmp_path / "f.pth")) == tmp_path / "f.pth"  # a path stays a path
