"""Names as users type them (issue #14 item 2): globs, marker files and the consumer
manifest compare under Unicode NFC, on a real directory and on the real S3 server,
while deletes and the ledger use each object's real name.

macOS clients write decomposed names (``e`` + U+0308) to NFS and SMB shares; a
person types the composed ``ë`` (U+00EB) in a policy. Both directions are tried.
"""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from lethe.raft.node import RaftJournal
from lethe.runner import ledger
from lethe.runner.execute import Runner
from lethe.spec import parse_policy
from lethe.storage.posix import PosixStorage
from lethe.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Server
from tests.runner.conftest import make_file, posix_policy

NFC = "Fotos-Zo\u00eb"  # composed, as typed
NFD = "Fotos-Zoe\u0308"  # decomposed, as macOS writes it
assert unicodedata.normalize("NFC", NFD) == NFC and NFC != NFD


def _posix_run(journal: RaftJournal, root: Path, name: str, **spec: Any) -> dict[str, Any]:
    policy = parse_policy(posix_policy(root, name, **spec))
    store = PosixStorage(policy.target)  # type: ignore[arg-type]
    return Runner(policy=policy, storage=store, journal=journal).run().as_dict()


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and ".lethe" not in p.parts}


def _ledger_keys(store: Any, run_id: str) -> list[str]:
    return sorted(x.key for x in ledger.read_run(storage=store, root=".lethe/ledger",
                                                  run_id=run_id))


@pytest.mark.parametrize(("on_disk", "typed"), [(NFD, NFC), (NFC, NFD)],
                         ids=["decomposed-dir-composed-glob", "composed-dir-decomposed-glob"])
def test_posix_exclude_and_include_match_across_normalization(
        journal: RaftJournal, tmp_path: Path, on_disk: str, typed: str) -> None:
    root = tmp_path / "share"
    make_file(root, f"{on_disk}/protected.jpg", age_days=90)
    make_file(root, f"{on_disk}/new.jpg", age_days=1)
    make_file(root, "other/old.jpg", age_days=90)
    make_file(root, "other/new.jpg", age_days=1)
    r = _posix_run(journal, root, f"nfc-ex-{len(on_disk)}", rules={"maxAge": "30d"},
                   select={"exclude": [f"{typed}/**"]})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert f"{on_disk}/protected.jpg" in _files(root)  # the "protected" photo stays
    assert "other/old.jpg" not in _files(root)

    make_file(root, "other/old.jpg", age_days=90)
    r = _posix_run(journal, root, f"nfc-in-{len(on_disk)}", rules={"maxAge": "30d"},
                   select={"include": [f"{typed}/*.jpg"]})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert _files(root) == {f"{on_disk}/new.jpg", "other/old.jpg", "other/new.jpg"}
    # Deleted by its real name, and the ledger keeps that name (not the typed one).
    store = PosixStorage(parse_policy(posix_policy(root, "x")).target)  # type: ignore[arg-type]
    assert _ledger_keys(store, r["run_id"]) == [f"{on_disk}/protected.jpg"]
    raw = b"".join(p.read_bytes() for p in (root / ".lethe" / "ledger" / r["run_id"]).iterdir())
    assert on_disk.encode() in raw and typed.encode() not in raw


def test_posix_marker_file_typed_composed_matches_a_decomposed_name(
        journal: RaftJournal, tmp_path: Path) -> None:
    """With ``validity.markerFile`` a backup set without its marker is not counted by
    keepLast; a marker the client wrote decomposed must still count, or every set is
    invalid and keepLast keeps none of them."""
    root = tmp_path / "sets"
    for day in range(3):
        make_file(root, f"2024-05-0{day + 1}/db.tar", age_days=10 - day)
        make_file(root, f"2024-05-0{day + 1}/fertig-Zoe\u0308", age_days=10 - day)
    r = _posix_run(journal, root, "nfc-marker", groupBy={"depth": 1},
                   rules={"keepLast": 1, "validity": {"markerFile": "fertig-Zo\u00eb"}},
                   safety={"maxDeletePercent": 100})
    assert (r["result"], r["deleted"]) == ("Succeeded", 4), r
    assert _files(root) == {"2024-05-03/db.tar", "2024-05-03/fertig-Zoe\u0308"}


def test_posix_manifest_entries_compare_under_nfc(journal: RaftJournal, tmp_path: Path
                                                  ) -> None:
    """A deleted file's manifest entry leaves the manifest first (I4) even when the
    consumer wrote the entry composed and the file's name is decomposed."""
    root = tmp_path / "cons"
    make_file(root, f"{NFD}/a.jpg", age_days=90)
    make_file(root, f"{NFD}/b.jpg", age_days=1)
    mpath = root / "manifest.json"
    mpath.write_text(json.dumps({"files": [f"{NFC}/a.jpg", f"./{NFC}/b.jpg"]}))
    r = _posix_run(journal, root, "nfc-manifest", rules={"maxAge": "30d"},
                   manifest={"path": "manifest.json"})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert _files(root) == {f"{NFD}/b.jpg", "manifest.json"}
    assert json.loads(mpath.read_text())["files"] == [f"./{NFC}/b.jpg"]


def test_posix_manifest_path_typed_in_the_other_form_is_never_a_candidate(
        journal: RaftJournal, tmp_path: Path) -> None:
    root = tmp_path / "cons2"
    make_file(root, "old.jpg", age_days=90)
    make_file(root, "new.jpg", age_days=1)
    make_file(root, f"{NFD}-manifest.json", age_days=90)
    r = _posix_run(journal, root, "nfc-manifest-path", rules={"maxAge": "30d"},
                   manifest={"path": f"{NFC}-manifest.json"})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert _files(root) == {"new.jpg", f"{NFD}-manifest.json"}


# --- S3 ---------------------------------------------------------------------------


def _s3_run(s3_server: S3Server, bucket: str, journal: RaftJournal, name: str,
            **spec: Any) -> tuple[dict[str, Any], S3Storage]:
    doc = {"apiVersion": "lethe.io/v1alpha1", "kind": "RetentionPolicy",
           "metadata": {"name": name, "namespace": "test"},
           "spec": {"target": {"s3": {"bucket": bucket, "prefix": "p/",
                                      "endpoint": s3_server.endpoint, "region": "us-east-1",
                                      "forcePathStyle": True}},
                    "mode": "Enforce", **spec}}
    policy = parse_policy(doc)
    store = S3Storage(policy.target, access_key=s3_server.access_key,  # type: ignore[arg-type]
                      secret_key=s3_server.secret_key, max_attempts=3)
    return Runner(policy=policy, storage=store, journal=journal).run().as_dict(), store


@pytest.mark.parametrize(("stored", "typed"), [(NFD, NFC), (NFC, NFD)],
                         ids=["decomposed-key-composed-glob", "composed-key-decomposed-glob"])
def test_s3_exclude_and_include_match_across_normalization(
        s3_server: S3Server, s3_bucket: str, journal: RaftJournal, stored: str,
        typed: str) -> None:
    client = s3_server.client()
    for key in (f"p/{stored}/protected.jpg", "p/other/old.jpg"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    time.sleep(1.1)  # LastModified has 1 s steps: the next ones are newer
    for key in (f"p/{stored}/new.jpg", "p/other/new.jpg"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")

    def left() -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="p/")[
            "Contents"] if not o["Key"].startswith("p/.lethe/")}

    r, store = _s3_run(s3_server, s3_bucket, journal, f"s3-nfc-{len(stored)}",
                       rules={"keepLast": 1}, select={"exclude": [f"{typed}/**"]})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert left() == {f"p/{stored}/protected.jpg", f"p/{stored}/new.jpg", "p/other/new.jpg"}
    store.close()

    r, store = _s3_run(s3_server, s3_bucket, journal, f"s3-nfc-in-{len(stored)}",
                       rules={"keepLast": 1}, select={"include": [f"{typed}/*.jpg"]})
    assert (r["result"], r["deleted"]) == ("Succeeded", 1), r
    assert left() == {f"p/{stored}/new.jpg", "p/other/new.jpg"}
    assert _ledger_keys(store, r["run_id"]) == [f"{stored}/protected.jpg"]
    store.close()


# --- S3 keys that look like paths (issue #14 item 6) -------------------------------


def test_s3_pathlike_keys_are_scanned_planned_and_deleted(
        s3_server: S3Server, s3_bucket: str, journal: RaftJournal) -> None:
    """Every key a listing returns is counted in ``scanned`` and planned like any
    other; a deleted key leaves the consumer manifest whether it is listed there as
    written (``./old``) or not; folder markers are reported, not dropped silently."""
    client = s3_server.client()
    old = ["/x", "a//b", "a/./b", "a/../b", "./old"]
    for key in old:
        client.put_object(Bucket=s3_bucket, Key="p/" + key, Body=b"o")
    client.put_object(Bucket=s3_bucket, Key="p/dir/", Body=b"")  # a console "folder"
    time.sleep(1.1)
    new = ["x", "a/b", "b", "old"]
    for key in new:
        client.put_object(Bucket=s3_bucket, Key="p/" + key, Body=b"n")
    client.put_object(Bucket=s3_bucket, Key="p/manifest.json", Body=json.dumps(
        {"files": ["a/../b", "./old", "b"]}).encode())
    r, store = _s3_run(s3_server, s3_bucket, journal, "s3-pathlike", rules={"keepLast": 4},
                       manifest={"path": "manifest.json"})
    assert (r["result"], r["scanned"], r["deleted"], r["errors"]) == ("Succeeded", 10, 5, 0), r
    assert r["plan"]["folderMarkers"] == 1, r["plan"]
    left = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="p/")["Contents"]
            if not o["Key"].startswith("p/.lethe/")}
    assert left == {"p/" + k for k in [*new, "manifest.json", "dir/"]}
    assert _ledger_keys(store, r["run_id"]) == sorted(old)
    doc = json.loads(client.get_object(Bucket=s3_bucket, Key="p/manifest.json")["Body"].read())
    assert doc["files"] == ["b"]
    store.close()


def test_s3_groups_of_pathlike_keys(s3_server: S3Server, s3_bucket: str,
                                    journal: RaftJournal) -> None:
    """``groupBy`` splits opaque keys on ``/`` like any other: ``/a/1`` is in group
    ``""`` and ``./s/1`` in group ``.``; each group is re-listed by exactly its own
    prefix before deletion (``""`` must not mean the whole target)."""
    client = s3_server.client()
    for key in ("/a/1", "/a/2", "./s/1", "b//1"):
        client.put_object(Bucket=s3_bucket, Key="p/" + key, Body=b"o")
    time.sleep(1.1)
    for key in ("new/1", "new/2"):
        client.put_object(Bucket=s3_bucket, Key="p/" + key, Body=b"n")
    r, store = _s3_run(s3_server, s3_bucket, journal, "s3-pathlike-groups",
                       rules={"keepLast": 1}, groupBy={"depth": 1})
    assert (r["result"], r["deleted"], r["skipped_changed"]) == ("Succeeded", 4, 0), r
    left = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="p/")["Contents"]
            if not o["Key"].startswith("p/.lethe/")}
    assert left == {"p/new/1", "p/new/2"}
    store.close()
