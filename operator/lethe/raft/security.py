"""The Raft port's password (I9), and the one loud way to run without it.

pysyncobj unpickles whatever arrives on its port; without a password that is
remote code execution for anyone who can reach the port. With a password,
every message is a Fernet token (AES + HMAC, key derived from the password)
and is authenticated *before* it is unpickled, and each connection starts
with a random-key exchange that stops replays. So: no password, no Raft —
unless a person explicitly asks for the local-development mode.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ENV_INSECURE",
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "InsecureRaftRefused",
    "resolve_password",
]

log = logging.getLogger("lethe.raft.security")

ENV_PASSWORD = "LETHE_RAFT_PASSWORD"
ENV_PASSWORD_FILE = "LETHE_RAFT_PASSWORD_FILE"
ENV_INSECURE = "LETHE_INSECURE_DEV_RAFT"

INSECURE_BANNER = (
    "RAFT PORT IS UNAUTHENTICATED (--insecure-dev-raft / LETHE_INSECURE_DEV_RAFT=1): "
    "anyone who can reach it can execute code in this process. Local development only; "
    "never run this in a cluster.")


class InsecureRaftRefused(RuntimeError):
    """No password was configured and insecure mode was not explicitly requested."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_password(*, password: str | None = None, password_file: str | Path | None = None,
                     insecure_dev: bool = False,
                     environ: Mapping[str, str] | None = None) -> str | None:
    """Return the Raft password, or ``None`` only in explicit insecure-dev mode.

    Precedence: explicit ``password``, explicit ``password_file``, then the
    environment (``LETHE_RAFT_PASSWORD``, then ``LETHE_RAFT_PASSWORD_FILE`` — a
    mounted Secret). A file's trailing newline is stripped (``kubectl create
    secret --from-file`` keeps it). Raises :class:`InsecureRaftRefused` when
    nothing is configured and insecure mode was not asked for.
    """
    env = os.environ if environ is None else environ
    secret = password or None
    if secret is None and password_file is None:
        secret = env.get(ENV_PASSWORD) or None
        password_file = env.get(ENV_PASSWORD_FILE) or None
    if secret is None and password_file is not None:
        try:
            secret = Path(password_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise InsecureRaftRefused(f"cannot read Raft password file {password_file}: "
                                      f"{exc.strerror}") from exc
        if secret is None:
            raise InsecureRaftRefused(f"Raft password file {password_file} is empty")
    if secret is not None:
        return secret
    if insecure_dev or _truthy(env.get(ENV_INSECURE)):
        log.warning(INSECURE_BANNER)
        return None
    raise InsecureRaftRefused(
        f"refusing to start Raft without a password: set {ENV_PASSWORD} or "
        f"{ENV_PASSWORD_FILE} (a mounted Secret), or pass --insecure-dev-raft "
        f"({ENV_INSECURE}=1) for local development only")
