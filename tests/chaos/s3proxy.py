"""A recording HTTP proxy in front of the S3 server: the checker's own view of deletes.

The replicas' S3 endpoint is this proxy; it forwards every request unchanged to
the real server and appends one JSON line per request to a log: arrival time
(taken after the request is read and *before* it is forwarded), response time,
method, bucket, key, query, the ``If-Match`` header, for DeleteObjects the
keys/ETags/VersionIds of the request body and the keys the response reports
``Deleted`` or ``Error``, and the response status. The checker decides
wrongful deletions from this log and the writers' own record, not from the
product's ledger (see checker.py, check 1).

The test's own clients (population, writers, checker) talk to the server
directly, so every line in the log is a replica's request. The proxy runs in a
process of its own (``python -m tests.chaos.s3proxy``): inside the trial's
process it would share the GIL with the writer and consumer threads, and on
a loaded machine that multiplied every replica request's latency.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["Request", "S3Proxy", "read_log"]

#: Not forwarded: hop-by-hop headers, and Expect (the body was already read here).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
        "trailer", "upgrade", "expect"}


@dataclass
class Request:
    """One request as the proxy saw it. Times are ``time.time()`` seconds."""

    t0: float  # arrival, before forwarding
    t1: float  # response received from the server
    method: str
    bucket: str
    key: str  # decoded object key ("" for bucket-level requests)
    query: dict[str, str]
    status: int
    if_match: str | None = None
    #: DeleteObjects request body: [{"key", "etag", "version"}]
    objects: list[dict[str, str | None]] = field(default_factory=list)
    #: DeleteObjects response: keys reported Deleted, and [key, code] for Errors
    deleted: list[str] = field(default_factory=list)
    errors: list[list[str]] = field(default_factory=list)
    #: DeleteObjects response: [key, VersionId or ""] of each Deleted entry
    deleted_versions: list[list[str]] = field(default_factory=list)
    #: Versioned buckets: [key, VersionId] of each delete marker this request placed
    #: (a delete without VersionId that the server answered with a new marker).
    markers: list[list[str]] = field(default_factory=list)

    @property
    def is_delete_objects(self) -> bool:
        return self.method == "POST" and "delete" in self.query

    @property
    def is_delete_object(self) -> bool:
        return self.method == "DELETE" and bool(self.key) and "uploadId" not in self.query

    def deletes(self) -> list[tuple[str, str | None, str | None]]:
        """``(key, requested ETag, requested VersionId)`` of every object this request
        *successfully* deleted (a DeleteObject with a 2xx status, or each key a 200
        DeleteObjects answered ``Deleted``)."""
        if self.is_delete_object and 200 <= self.status < 300:
            return [(self.key, self.if_match, self.query.get("versionId"))]
        if self.is_delete_objects and self.status == 200:
            # One key may be asked for several times (versions of it): match each asked
            # object with a Deleted entry by key and VersionId.
            done = {(k, v or None) for k, v in self.deleted_versions} or \
                {(k, None) for k in self.deleted}
            return [(str(o["key"]), o.get("etag"), o.get("version")) for o in self.objects
                    if (o["key"], o.get("version") or None) in done]
        return []


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _delete_body(body: bytes) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    with contextlib.suppress(ET.ParseError):
        for obj in ET.fromstring(body):
            if _local(obj.tag) != "Object":
                continue
            f = {_local(c.tag): (c.text or "") for c in obj}
            out.append({"key": f.get("Key", ""), "etag": f.get("ETag"),
                        "version": f.get("VersionId")})
    return out


def _delete_result(body: bytes, asked: list[dict[str, str | None]]
                   ) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """[key, VersionId or ""] deleted, [key, code] errors, and [key, marker VersionId]
    placed (a ``Deleted`` entry with a marker for a key asked for without VersionId)."""
    deleted: list[list[str]] = []
    errors: list[list[str]] = []
    markers: list[list[str]] = []
    unversioned = {o["key"] for o in asked if not o.get("version")}
    with contextlib.suppress(ET.ParseError):
        for item in ET.fromstring(body):
            f = {_local(c.tag): (c.text or "") for c in item}
            if _local(item.tag) == "Deleted":
                deleted.append([f.get("Key", ""), f.get("VersionId", "")])
                if f.get("DeleteMarker") == "true" and f.get("Key") in unversioned \
                        and f.get("DeleteMarkerVersionId"):
                    markers.append([f["Key"], f["DeleteMarkerVersionId"]])
            elif _local(item.tag) == "Error":
                errors.append([f.get("Key", ""), f.get("Code", "")])
    return deleted, errors, markers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _up: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the JSON log is the record; stderr stays quiet

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        for attempt in (0, 1):
            fresh = self._up is None
            if self._up is None:
                self._up = http.client.HTTPConnection(*self.server.upstream, timeout=120)
            try:
                self._up.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self._up.putheader(k, v)
                if body or self.command in ("PUT", "POST"):
                    self._up.putheader("Content-Length", str(len(body)))
                self._up.endheaders(body)
                resp = self._up.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._up.close()
                    self._up = None
                return resp.status, resp.reason, resp.getheaders(), data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if self._up is not None:
                    self._up.close()
                self._up = None
                if fresh or attempt:  # only a stale keep-alive connection is retried
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        body = self._body()
        t0 = time.time()
        url = urllib.parse.urlsplit(self.path)
        bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
        query = {k: v[0] for k, v in
                 urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        req = Request(t0=t0, t1=t0, method=self.command, bucket=bucket, key=key, query=query,
                      status=0, if_match=self.headers.get("If-Match"))
        if req.is_delete_objects:
            req.objects = _delete_body(body)
        try:
            status, reason, headers, data = self._forward(body)
        except OSError as e:
            status, reason, headers, data = 502, "Bad Gateway", [], str(e).encode()
        req.t1, req.status = time.time(), status
        if req.is_delete_objects and status == 200:
            req.deleted_versions, req.errors, req.markers = _delete_result(data, req.objects)
            req.deleted = [k for k, _v in req.deleted_versions]
        elif req.is_delete_object and 200 <= status < 300 and "versionId" not in query:
            h = {k.lower(): v for k, v in headers}
            if h.get("x-amz-delete-marker") == "true" and h.get("x-amz-version-id"):
                req.markers = [[key, h["x-amz-version-id"]]]
        self.server.record(req)
        self.send_response_only(status, reason)  # the server's own Date header goes back
        for k, v in headers:
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if self.command == "HEAD":
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def finish(self) -> None:
        super().finish()
        if self._up is not None:
            self._up.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], log: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self._lock = threading.Lock()
        self._log = open(log, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a killed replica's connection: expected in a chaos trial
        super().handle_error(request, client_address)

    def record(self, req: Request) -> None:
        with self._lock:
            if not self._log.closed:
                self._log.write(json.dumps(asdict(req)) + "\n")
                self._log.flush()

    def close(self) -> None:
        with self._lock:
            self._log.close()


class S3Proxy:
    """``S3Proxy(upstream="http://127.0.0.1:port", log=path)``: a proxy process
    listening on a free loopback port (``endpoint``) until :meth:`close`.
    Raises RuntimeError if it does not start."""

    def __init__(self, *, upstream: str, log: Path) -> None:
        self.log = log
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.s3proxy", "--upstream", upstream,
             "--log", str(log)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self._proc.kill()
            raise RuntimeError(f"s3proxy did not start (said {line!r}, "
                               f"exit {self._proc.wait(timeout=10)})")
        self.endpoint = line

    def close(self) -> None:
        """Stop the process; every request it answered is already in the log."""
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.s3proxy")
    p.add_argument("--upstream", required=True)
    p.add_argument("--log", type=Path, required=True)
    args = p.parse_args()
    u = urllib.parse.urlsplit(args.upstream)
    server = _Server((u.hostname or "127.0.0.1", u.port or 80), args.log)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.close()


if __name__ == "__main__":
    main()


def read_log(path: Path) -> list[Request]:
    """Every request the proxy recorded, in log order."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [Request(**json.loads(line)) for line in f if line.strip()]
