"""Health, readiness, Raft status and Prometheus metrics over plain HTTP.

``/healthz``: the process is alive: its heartbeat thread ran in the last 30 s (a
stopped or wedged process fails it; a slow leader loop does not).
``/readyz``: this node is a Raft member that sees a leader, and the watches
have listed both kinds at least once. ``/raft``: the node's Raft view as JSON.
``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["Probes", "serve"]


class Probes:
    def __init__(self, *, healthy: Callable[[], bool], ready: Callable[[], tuple[bool, str]],
                 raft_status: Callable[[], dict[str, Any]],
                 registries: list[CollectorRegistry]) -> None:
        self.healthy = healthy
        self.ready = ready
        self.raft_status = raft_status
        self.registries = registries


def _handler(probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The prober gave up first (its timeout, e.g. while this process was
                # stopped or starved): nothing to answer, and no traceback in the log.
                pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/healthz":
                ok = probes.healthy()
                self._send(200 if ok else 503, b"ok\n" if ok else b"operator loop stuck\n")
            elif path == "/readyz":
                ok, why = probes.ready()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/raft":
                self._send(200, json.dumps(probes.raft_status(), indent=2,
                                           default=str).encode(), "application/json")
            elif path == "/metrics":
                body = b"".join(generate_latest(r) for r in probes.registries)
                self._send(200, body, CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz /readyz /raft /metrics\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the run logs

    return Handler


def serve(*, host: str, port: int, probes: Probes) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), _handler(probes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lethe-http", daemon=True).start()
    return server
