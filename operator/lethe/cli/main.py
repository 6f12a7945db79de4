"""The ``lethe`` command line.

``lethe plan`` never deletes. ``lethe apply`` is itself the instruction to
enforce, whatever the file's ``spec.mode`` says. Both run a policy file (the
same YAML as the custom resource) against a local directory or a bucket, with
no cluster, through a one-node Raft journal: the same code path as the
operator (I7).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import yaml

from lethe.spec import Policy, SpecError, parse_policy

__all__ = ["main"]

# Plain text: argparse prints it as is (the module docstring is reStructuredText).
_DESCRIPTION = ("Retention for NFS and S3. 'lethe plan' shows what a RetentionPolicy "
                "file would delete and never deletes; 'lethe apply' enforces it now; "
                "'lethe run' is the Kubernetes operator.")


def _load_policy(path: str) -> Policy:
    """The one RetentionPolicy in a YAML (or JSON) file; any fault is a one-line
    SystemExit naming the file, and the field for a spec error: never a traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
    except OSError as e:
        raise SystemExit(f"lethe: cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise SystemExit(f"lethe: {path} is not UTF-8 text (byte {e.start}: {e.reason})") from e
    except RecursionError as e:  # PyYAML recurses once per level of nesting
        raise SystemExit(f"lethe: {path} is nested too deeply to be a policy") from e
    except ValueError as e:  # an integer past sys.get_int_max_str_digits(); YAML gives no mark
        raise SystemExit(f"lethe: {path} is not valid YAML here: it holds a number of more "
                         f"than {sys.get_int_max_str_digits()} digits") from e
    except yaml.MarkedYAMLError as e:
        where = (f" at line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}"
                 if e.problem_mark else "")
        raise SystemExit(f"lethe: {path} is not valid YAML: {e.problem or e.context}{where}"
                         ) from e
    except yaml.YAMLError as e:
        text = " ".join(str(e).split())
        raise SystemExit(f"lethe: {path} is not valid YAML: {text}") from e
    policies = [d for d in docs if isinstance(d, dict) and d.get("kind") == "RetentionPolicy"]
    if len(policies) != 1:
        raise SystemExit(f"lethe: {path} must contain exactly one RetentionPolicy "
                         f"(found {len(policies)})")
    try:
        return parse_policy(policies[0])
    except SpecError as e:
        raise SystemExit(f"lethe: {path}: {e}") from e


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, info: dict[str, Any]) -> None:
        if not self.enabled or time.monotonic() - self._last < 0.2:
            return
        self._last = time.monotonic()
        if info.get("phase") == "delete":
            text = (f"deleting: {info.get('deleted', 0)} deleted, "
                    f"{info.get('skippedChanged', 0)} skipped, {info.get('errors', 0)} errors")
        else:
            text = f"{info.get('phase')}: {info.get('scanned', 0)} entries"
        sys.stderr.write("\r\x1b[K" + text)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_report(report: dict[str, Any]) -> None:
    plan = report.get("plan") or {}
    print(f"run {report['run_id']}  policy {report['policy']}  mode {report['mode']}  "
          f"result {report['result']}")
    if report.get("message"):
        print(f"  {report.get('reason') or ''}: {report['message']}")
    print(f"  scanned {report['scanned']}, selected {plan.get('selected', 0)}, "
          f"eligible {report['matched']} ({_human_size(plan.get('matchedBytes', 0))})")
    if plan.get("oldestEligibleAgeSeconds") is not None:
        print(f"  oldest eligible item is {plan['oldestEligibleAgeSeconds'] // 3600} h old")
    if plan.get("future"):
        print(f"  skipped {plan['future']} entries with future timestamps")
    if plan.get("folderMarkers"):
        print(f"  skipped {plan['folderMarkers']} folder marker objects (S3 keys ending in '/')")
    summary = plan.get("rules") or {}
    per_rule = summary.get("rules") or []
    if per_rule:
        print(f"  {'rule':<16} {'keep':>8} {'keep bytes':>12} {'delete':>8} {'delete bytes':>12}")
        for r in per_rule:
            k, d = r["kept"], r["deleted"]
            print(f"  {r['rule']:<16} {k['items']:>8} {_human_size(k['bytes']):>12}"
                  f" {d['items']:>8} {_human_size(d['bytes']):>12}")
        sample = [s for r in per_rule for s in r.get("sample", [])]
        if sample:
            print("  sample (deciding rule):")
            for s in sample[:20]:
                verb = "delete" if s.get("delete") else "keep  "
                print(f"    {verb} {s.get('key')}  ({s.get('rule')}: {s.get('reason')})")
    if report["mode"] == "Enforce" and report["result"] != "Planned":
        print(f"  deleted {report['deleted']} ({_human_size(report['bytes_freed'])}), "
              f"skipped changed {report['skipped_changed']}, errors {report['errors']}, "
              f"locked {report['locked']}")
    if report.get("plan_key"):
        print(f"  full plan written to {report['plan_key']}")


def _credentials() -> tuple[str, str] | None:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    return (key, secret) if key and secret else None


def _digest(policy: Policy) -> str:
    """The policy as parsed (target, rules, selection, brakes...), as one hash."""
    raw = json.dumps(dataclasses.asdict(policy), sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_unfinished(active: Any, *, policy: Policy, mode: str, data_dir: str,
                      file: str) -> None:
    """Refuse to resume an unfinished run that this invocation did not ask for.

    The journal is keyed by namespace/name, and a run left unfinished (a crash, a
    manifest that could not be written) is resumed by the next invocation. That
    must never be ``lethe plan`` finishing an Enforce run, nor an apply of another
    policy that shares the name (another target!): both deleted files before.
    Raises ``SystemExit`` with what to do.
    """
    digest_file = os.path.join(data_dir, "policy.sha256")
    digest = _digest(policy)
    if active is None:
        os.makedirs(data_dir, exist_ok=True)
        with open(digest_file, "w") as f:
            f.write(digest)
        return
    try:
        with open(digest_file) as f:
            started_with = f.read().strip()
    except FileNotFoundError:
        started_with = ""
    where = f"state {data_dir}"
    if mode == "Plan" and active.mode != "Plan":
        raise SystemExit(
            f"lethe: policy {policy.namespace}/{policy.name} has an unfinished {active.mode} "
            f"run {active.run_id} ({where}); a plan never finishes it. Finish it with "
            f"`lethe apply -f <the policy file it started with>`, or use another --state-dir")
    if started_with != digest:
        raise SystemExit(
            f"lethe: policy {policy.namespace}/{policy.name} has an unfinished run "
            f"{active.run_id} ({where}) that started with a different spec than {file}; "
            f"finish it with `lethe apply -f <the policy file it started with>`, or use "
            f"another --state-dir")


def _run_local(args: argparse.Namespace, *, mode: str) -> int:
    from lethe.journal import JournalError
    from lethe.raft.local import local_journal
    from lethe.runner.execute import Runner
    from lethe.storage.factory import open_storage

    # A run allocates a few short-lived tuples per listed object; at the default
    # threshold (700) the collector runs every few hundred objects and re-scans
    # the long-lived import-time objects on each full pass: ~3 % of a 200,000-file
    # apply. Everything imported so far is frozen out of it, and it runs less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    policy = _load_policy(args.file)
    storage = open_storage(policy.target, credentials=_credentials())
    progress = _Progress(enabled=sys.stderr.isatty() and args.output != "json")
    state_dir = args.state_dir or os.path.join(
        os.environ.get("XDG_STATE_HOME", os.path.expanduser("~/.local/state")), "lethe")
    data_dir = os.path.join(state_dir, policy.namespace, policy.name)
    with contextlib.ExitStack() as stack:
        try:
            j = stack.enter_context(local_journal(data_dir=data_dir))
        except (JournalError, OSError) as e:  # another run holds it, no lease, no access
            storage.close()
            raise SystemExit(f"lethe: {e}") from e
        runner = Runner(policy=policy, storage=storage, journal=j, progress=progress,
                        spool_dir=tempfile.gettempdir())
        try:
            _check_unfinished(j.read().runs.get(runner.key), policy=policy, mode=mode,
                              data_dir=data_dir, file=args.file)
            report = runner.run(mode=mode).as_dict()
        except JournalError as e:  # LostLeadership, a superseded ledger write
            raise SystemExit(f"lethe: {e}") from e
        finally:
            progress.done()
            storage.close()
    if args.output == "json":
        print(json.dumps(report, sort_keys=True))
    else:
        _print_report(report)
    return 0 if report["result"] in ("Succeeded", "Planned") else 1


def _diff(args: argparse.Namespace) -> int:
    from lethe.runner.compare import compare_policies
    from lethe.storage.factory import open_storage

    old, new = _load_policy(args.diff[0]), _load_policy(args.diff[1])
    storage = open_storage(new.target, credentials=_credentials())
    try:
        result = compare_policies(old=old, new=new, storage=storage)
    finally:
        storage.close()
    if args.output == "json":
        print(json.dumps(result, sort_keys=True))
        return 0
    print(f"policy change {args.diff[0]} -> {args.diff[1]} on {result['target']}")
    print(f"  entries compared: {result['entries']}, unchanged: {result['unchanged']}")
    for label, part in (("newly eligible", "became_eligible"),
                        ("newly protected", "became_protected")):
        p = result[part]
        print(f"  {label + ':':<17}{p['entries']:>8} entries ({_human_size(p['bytes'])})")
        for c in p["sample"][:20]:
            print(f"      {c['key']}  ({c['old']['rule']} -> {c['new']['rule']})")
    if result["transitions"]:
        print("  deciding rule changes:")
        for t in result["transitions"]:
            print(f"      {t['old']:<14} -> {t['new']:<14} {t['entries']:>8} entries")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lethe", description=_DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("plan", "show what a policy would delete; never deletes"),
                       ("apply", "enforce a policy now: delete what it selects")):
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("-f", "--file", help="RetentionPolicy YAML")
        c.add_argument("--output", choices=("text", "json"), default="text")
        c.add_argument("--state-dir", help="where the local journal lives "
                                           "(default ~/.local/state/lethe)")
        if name == "plan":
            c.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                           help="compare two versions of a policy on its target")
    r = sub.add_parser("raft", help="Raft cluster tools")
    rsub = r.add_subparsers(dest="raft_command", required=True)
    st = rsub.add_parser("status", help="state, leader, term, indexes and peers")
    st.add_argument("--url", default="http://127.0.0.1:8080/raft")
    # Listed here for `lethe --help`; main() hands its arguments to `lethe run`'s own
    # parser (lethe.controller.config), so `lethe run --help` shows every setting.
    sub.add_parser("run", add_help=False,
                   help="run the operator (the container's entry point; see lethe run --help)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        from lethe.controller.main import run_main

        return run_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "plan":
        if args.diff:
            return _diff(args)
        if not args.file:
            raise SystemExit("lethe plan: -f/--file or --diff OLD NEW is required")
        return _run_local(args, mode="Plan")
    if args.command == "apply":
        if not args.file:
            raise SystemExit("lethe apply: -f/--file is required")
        return _run_local(args, mode="Enforce")
    if args.command == "raft":
        from lethe.raft.cli import raft_status_main

        return raft_status_main(["--url", args.url])
    return 2


if __name__ == "__main__":
    sys.exit(main())
