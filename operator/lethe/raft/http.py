"""HTTP glue for one Raft member: the reusable `/raft` document and a test server.

``raft_status_json`` is what the operator's own HTTP server mounts at `/raft`.
``serve`` is a tiny stdlib server used by ``python -m lethe.raft`` so tests and
benchmarks can drive real processes: GET `/raft`, GET `/readyz`, GET `/state`,
POST `/commit`, POST `/bench`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lethe.journal import (
    BeginRun,
    Command,
    CompleteBatch,
    Fence,
    FinishRun,
    IntentEntry,
    JournalError,
    JournalRejected,
    NotLeader,
    RecordIntent,
)
from lethe.raft.node import RaftJournal

__all__ = ["command_from_json", "raft_ready", "raft_status_json", "serve"]

log = logging.getLogger("lethe.raft.http")


def raft_status_json(journal: RaftJournal) -> bytes:
    """The `/raft` response body."""
    return json.dumps(journal.status(), indent=2, sort_keys=True).encode()


def raft_ready(journal: RaftJournal) -> tuple[bool, str]:
    """The Raft half of `/readyz`: a leader is known, else why not (#14).

    Before QUORUM_REPORT_AFTER seconds without a leader the reason is only
    "no Raft leader known yet"; after that it names the members needed, each
    peer's connection, last answer and pre-vote answer, and for how long.
    """
    leader = journal.leader()
    if leader is not None:
        return True, f"ok: leader {leader}"
    return False, journal.quorum_problem() or "no Raft leader known yet"


def _entries(data: dict[str, Any]) -> tuple[IntentEntry, ...]:
    if "entries" in data:
        return tuple(IntentEntry(key=str(e[0]), fingerprint=str(e[1]), size=int(e[2]),
                                 rule=str(e[3])) for e in data["entries"])
    n = int(data.get("keys", 0))
    prefix = str(data.get("prefix", "k"))
    return tuple(IntentEntry(key=f"{prefix}/{i:06d}", fingerprint=f"etag-{i}", size=i,
                             rule="maxAge") for i in range(n))


def command_from_json(data: dict[str, Any], *, term: int) -> Command:
    """Build a journal command from a test request; ``term`` defaults to the node's."""
    kind = data.get("kind")
    t = int(data.get("term", term))
    policy = str(data.get("policy", "default/test"))
    run_id = str(data.get("run_id", "run-1"))
    if kind == "Fence":
        return Fence(term=t)
    if kind == "BeginRun":
        now = float(data.get("now", time.time()))
        return BeginRun(policy=policy, run_id=run_id, term=t, started=now, now=now,
                        slot=data.get("slot"), job=data.get("job"))
    if kind == "RecordIntent":
        return RecordIntent(policy=policy, run_id=run_id, seq=int(data.get("seq", 0)), term=t,
                            entries=_entries(data), cursor=int(data.get("cursor", 0)))
    if kind == "CompleteBatch":
        return CompleteBatch(policy=policy, run_id=run_id, seq=int(data.get("seq", 0)), term=t,
                             counters={"deleted": int(data.get("deleted", 0))})
    if kind == "FinishRun":
        return FinishRun(policy=policy, run_id=run_id, term=t,
                         result=str(data.get("result", "Succeeded")), ended=time.time())
    raise ValueError(f"unknown command kind {kind!r}")


def _bench(journal: RaftJournal, *, entries: int, keys: int, mode: str,
           window: int) -> dict[str, Any]:
    """Journal throughput inside the leader: one run, ``entries`` intents of ``keys`` keys.

    Each intent is followed by its completion (as the runner does after the
    deletes), so at most one batch is in flight in the state machine.
    """
    term = journal.current_term()
    run_id = f"bench-{time.monotonic_ns()}"
    policy = f"bench/{run_id}"  # a failed bench must not block the next one
    batch = _entries({"keys": keys, "prefix": run_id})
    journal.commit(BeginRun(policy=policy, run_id=run_id, term=term, started=time.time(),
                            now=time.time()))
    cmds: list[Command] = []
    for seq in range(entries):
        cmds.append(RecordIntent(policy=policy, run_id=run_id, seq=seq, term=term,
                                 entries=batch, cursor=(seq + 1) * keys))
        cmds.append(CompleteBatch(policy=policy, run_id=run_id, seq=seq, term=term,
                                  counters={"deleted": keys}))
    start = time.perf_counter()
    if mode == "sync":
        for cmd in cmds:
            journal.commit(cmd, timeout=30.0)
    else:
        inflight: list[Future[int]] = []
        for cmd in cmds:
            inflight.append(journal.commit_async(cmd))
            if len(inflight) >= window:
                inflight.pop(0).result(timeout=30.0)
        for f in inflight:
            f.result(timeout=30.0)
    elapsed = time.perf_counter() - start
    journal.commit(FinishRun(policy=policy, run_id=run_id, term=term, result="Succeeded",
                             ended=time.time()))
    return {"mode": mode, "intents": entries, "keys_per_intent": keys,
            "raft_entries": len(cmds), "seconds": elapsed,
            "intents_per_s": entries / elapsed, "keys_per_s": entries * keys / elapsed}


class _Handler(BaseHTTPRequestHandler):
    journal: RaftJournal
    allow_unfenced: bool

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/raft":
            self._send(200, raft_status_json(self.journal))
        elif self.path == "/readyz":
            ok, why = raft_ready(self.journal)
            self._send(200 if ok else 503, {"ready": ok, "reason": why})
        elif self.path == "/state":
            self._send(200, dataclasses.asdict(self.journal.read()))
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": "invalid JSON"})
            return
        try:
            if self.path == "/commit":
                cmd = command_from_json(data, term=self.journal.current_term())
                if data.get("unfenced"):
                    if not self.allow_unfenced:
                        self._send(403, {"error": "unfenced commits are disabled"})
                        return
                    index = self.journal.submit_unfenced(cmd).result(
                        timeout=float(data.get("timeout", 5.0)))
                else:
                    index = self.journal.commit(cmd, timeout=float(data.get("timeout", 5.0)))
                self._send(200, {"index": index, "term": getattr(cmd, "term", None)})
            elif self.path == "/bench":
                self._send(200, _bench(self.journal, entries=int(data.get("entries", 100)),
                                       keys=int(data.get("keys", 1000)),
                                       mode=str(data.get("mode", "pipelined")),
                                       window=int(data.get("window", 64))))
            else:
                self._send(404, {"error": "not found"})
        except NotLeader as exc:
            self._send(409, {"error": str(exc), "type": "NotLeader"})
        except JournalRejected as exc:
            self._send(409, {"error": str(exc), "type": "JournalRejected"})
        except JournalError as exc:
            self._send(503, {"error": str(exc), "type": "JournalError"})
        except TimeoutError as exc:
            self._send(503, {"error": f"timeout: {exc}", "type": "JournalError"})
        except (ValueError, TypeError, KeyError) as exc:
            self._send(400, {"error": str(exc), "type": "BadRequest"})


def serve(*, journal: RaftJournal, address: str,
          allow_unfenced: bool = False) -> ThreadingHTTPServer:
    """Start the test HTTP server in a daemon thread; return it (call ``shutdown()``)."""
    host, port = address.rsplit(":", 1)
    handler = type("RaftHandler", (_Handler,), {"journal": journal,
                                                "allow_unfenced": allow_unfenced})
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="raft-http", daemon=True).start()
    return server
