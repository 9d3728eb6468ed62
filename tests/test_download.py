import hashlib
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

import aras.data as D
import aras.dataset as DS
import aras.prepare as PR
from aras.core import ArasDataError, ArasDownloadError
from aras.landcover import labels_to_rgb


class _RangeHandler(BaseHTTPRequestHandler):
    "Serves files from `self.server.files` (name -> bytes), honouring `Range: bytes=N-`."
    def do_GET(self):
        name = self.path.split("/")[-1].split("?")[0]
        body = self.server.files.get(name)
        self.server.requests.append((name, self.headers.get("Range")))
        if body is None:
            self.send_response(404); self.end_headers(); return
        start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
        if start >= len(body):
            self.send_response(416); self.end_headers(); return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start)); self.end_headers()
        self.wfile.write(body[start:])
    def log_message(self, *a): pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    srv.files, srv.requests = {}, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown(); srv.server_close()


def _url(srv): return f"http://127.0.0.1:{srv.server_address[1]}/files/{{name}}?download=1"


def test_md5sum_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3_000_000)
    (tmp_path / "f").write_bytes(data)
    assert PR.md5sum(tmp_path / "f", chunk=1 << 16) == hashlib.md5(data).hexdigest()


def test_verify_archives_reports_missing_and_mismatched(tmp_path):
    (tmp_path / "val.zip").write_bytes(b"not the archive")
    with pytest.raises(ArasDataError) as e:
        PR.verify_archives(tmp_path, {"val.zip": PR.ARCHIVE_MD5["val.zip"], "test.zip": PR.ARCHIVE_MD5["test.zip"]})
    msg = str(e.value)
    assert f"val.zip: MD5 {hashlib.md5(b'not the archive').hexdigest()} does not match the published 76e61fd7557d65ba0596e44c0f92b43f" in msg
    assert "test.zip: missing" in msg
    (tmp_path / "ok.zip").write_bytes(b"x")
    assert PR.verify_archives(tmp_path, {"ok.zip": hashlib.md5(b"x").hexdigest()}).ok.all()


def test_download_resumes_a_partial_file_and_verifies(server, tmp_path):
    body = np.random.default_rng(1).bytes(2_500_000)
    server.files["train.zip"] = body
    dest = tmp_path / "train.zip"
    (tmp_path / "train.zip.part").write_bytes(body[:1_000_000])          # an interrupted earlier download
    PR.download_file(_url(server).format(name="train.zip"), dest, hashlib.md5(body).hexdigest(), progress=False)
    assert dest.read_bytes() == body and not (tmp_path / "train.zip.part").exists()
    assert server.requests == [("train.zip", "bytes=1000000-")]        # only the missing part was fetched


def test_download_with_wrong_md5_keeps_nothing(server, tmp_path):
    server.files["val.zip"] = b"corrupted"
    with pytest.raises(ArasDownloadError, match="val.zip: MD5 .* does not match the published 0123"):
        PR.download_file(_url(server).format(name="val.zip"), tmp_path / "val.zip", "0123", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_fails_at_once_with_advice(tmp_path):
    with socket.socket() as s:                                          # a port nobody listens on
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(ArasDownloadError, match=r"cannot reach the server .* run `aras verify"):
        PR.download_file(f"http://127.0.0.1:{port}/train.zip", tmp_path / "train.zip", progress=False)
    assert time.time() - t0 < 5


def test_http_error_is_reported(server, tmp_path):
    with pytest.raises(ArasDownloadError, match="server answered 404"):
        PR.download_file(_url(server).format(name="nothing.zip"), tmp_path / "x.zip", progress=False)


def test_download_aras400k_unpacks_to_the_published_layout(server, tmp_path, monkeypatch):
    buf = tmp_path / "src.zip"
    with zipfile.ZipFile(buf, "w") as z:
        for sub, arr in (("images", np.zeros((8, 8, 3), np.uint8)), ("masks", labels_to_rgb(np.zeros((8, 8), np.uint8)))):
            p = tmp_path / f"{sub}.png"; Image.fromarray(arr).save(p)
            z.write(p, f"ARAS400k/val/{sub}/a.png")
    body = buf.read_bytes()
    server.files["val.zip"] = body
    monkeypatch.setitem(PR.ARCHIVE_MD5, "val.zip", hashlib.md5(body).hexdigest())
    root = PR.download_aras400k(tmp_path / "dl", ("val.zip",), base_url=_url(server), progress=False)
    assert root == tmp_path / "dl" / "ARAS400k"
    assert DS.ARAS400k(root, "val").pair(0)[1].shape == (8, 8)
    PR.download_aras400k(tmp_path / "dl", ("val.zip",), base_url=_url(server), progress=False)
    assert len(server.requests) == 1                                    # a verified archive is not fetched again


def _val_zip(tmp_path):
    buf = tmp_path / "src.zip"
    with zipfile.ZipFile(buf, "w") as z:
        for sub, arr in (("images", np.zeros((8, 8, 3), np.uint8)), ("masks", labels_to_rgb(np.full((8, 8), 3, np.uint8)))):
            p = tmp_path / f"{sub}.png"; Image.fromarray(arr).save(p)
            z.write(p, f"ARAS400k/val/{sub}/a.png")
    return buf.read_bytes()


def test_dataset_download_fetches_checks_and_unpacks_its_split(server, tmp_path, monkeypatch):
    body = _val_zip(tmp_path)
    server.files["val.zip"] = body
    monkeypatch.setitem(PR.ARCHIVE_MD5, "val.zip", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(DS.ARAS400k, "url", _url(server))
    ds = DS.ARAS400k(tmp_path / "data", "val", download=True)
    assert len(ds) == 1 and (ds[0]["mask"] == 3).all() and len(server.requests) == 1
    assert len(DS.ARAS400k(tmp_path / "data", "val", download=True)) == 1 and len(server.requests) == 1   # once


def test_dataset_checksum_refuses_an_archive_that_differs_and_unpacks_nothing(tmp_path, monkeypatch):
    body = _val_zip(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "val.zip").write_bytes(body)
    monkeypatch.setitem(PR.ARCHIVE_MD5, "val.zip", "0" * 32)
    with pytest.raises(ArasDataError, match=r"val.zip: MD5 [0-9a-f]{32} does not match the published 0{32}"):
        DS.ARAS400k(tmp_path / "data", "val", checksum=True)
    assert not (tmp_path / "data" / "ARAS400k").exists()
    monkeypatch.setitem(PR.ARCHIVE_MD5, "val.zip", hashlib.md5(body).hexdigest())
    assert (DS.ARAS400k(tmp_path / "data", "val", checksum=True)[0]["mask"] == 3).all()


def test_bad_zip_leaves_nothing_behind(tmp_path):
    (tmp_path / "train.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ArasDataError, match="train.zip: not a valid zip archive"):
        PR.extract_archive(tmp_path / "train.zip", tmp_path / "out")
    assert not any((tmp_path / "out").glob(".unpack-*")) if (tmp_path / "out").exists() else True
