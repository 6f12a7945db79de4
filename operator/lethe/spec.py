"""The RetentionPolicy spec as Python values: one parser for the CLI and the operator.

The CRD (``crds/``) rejects bad objects at apply time; this parser repeats the
checks so a policy file given to ``lethe plan -f`` fails the same way, with an
error that names the field path (``spec.rules.maxAge``). It does no I/O.
"""

from __future__ import annotations

import calendar
import datetime as dt
import difflib
import functools
import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = [
    "CalendarRules",
    "Duration",
    "GroupBy",
    "ManifestSpec",
    "Policy",
    "PosixTarget",
    "Rules",
    "S3Target",
    "Safety",
    "Selection",
    "SpecError",
    "Validity",
    "parse_duration",
    "parse_fixed_duration",
    "parse_policy",
    "parse_quantity",
]

Mode = Literal["Plan", "Enforce"]


class SpecError(ValueError):
    """A policy field is invalid; ``field`` is its path, e.g. ``spec.rules.maxAge``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- scalar formats ------------------------------------------------------------

#: ``y`` = 12 calendar months, ``mo`` = a calendar month; ``w``, ``d``, ``h``,
#: ``min``, ``s`` are fixed lengths (a day is 86,400 s). A bare ``m`` is refused:
#: a restic user reads ``6m`` as six months, a Kubernetes user as six minutes.
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)mo)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)min)?(?:(\d+)s)?$")
_FIXED_SECONDS = (7 * 86400, 86400, 3600, 60, 1)
# Kept identical to the CRD's pattern so the two never disagree.
DURATION_PATTERN = r"^([0-9]+y)?([0-9]+mo)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+min)?([0-9]+s)?$"
#: A unit that reads two ways (the CRD has the same check as a CEL rule).
AMBIGUOUS_UNIT = re.compile(r"[0-9][mM]([0-9]|$)")
_AMBIGUOUS_TEXT = "the unit m is ambiguous: write min for minutes (90min) or mo for months (6mo)"
_DURATION_HELP = ("use whole numbers with units y, mo, w, d, h, min, s in that order, "
                  "e.g. 30d, 12h, 90min, 6mo, 1y")


@dataclass(frozen=True, slots=True)
class Duration:
    """A span as a policy writes it: calendar ``months`` (a year is 12) plus fixed
    ``seconds``. Months are calendar months, as restic's ``--keep-within 6m``: six
    months before 31 August is 28/29 February (clamped to the month's last day,
    which is the earlier instant, so a rule keeps slightly more, never less)."""

    months: int = 0
    seconds: int = 0

    @classmethod
    def of(cls, seconds: int) -> Duration:
        """A fixed span of ``seconds``."""
        return cls(months=0, seconds=int(seconds))

    def is_zero(self) -> bool:
        return self.months == 0 and self.seconds == 0

    def before(self, t: float, *, tz: dt.tzinfo = dt.UTC) -> float:
        """The instant this span before ``t`` (epoch seconds): the months on the
        wall clock of ``tz`` (the rules' ``timeZone``), then the seconds.
        ``-inf`` if that is before year 1."""
        if self.months:
            try:
                local = dt.datetime.fromtimestamp(t, tz)
                y, m0 = divmod(local.year * 12 + local.month - 1 - self.months, 12)
                day = min(local.day, calendar.monthrange(y, m0 + 1)[1])
                t = local.replace(year=y, month=m0 + 1, day=day).timestamp()
            except (ValueError, OverflowError, OSError):
                return float("-inf")
        return t - self.seconds

    def __str__(self) -> str:
        y, mo = divmod(self.months, 12)
        d, s = divmod(self.seconds, 86400)
        h, s = divmod(s, 3600)
        mi, s = divmod(s, 60)
        parts = [(y, "y"), (mo, "mo"), (d, "d"), (h, "h"), (mi, "min"), (s, "s")]
        return "".join(f"{q}{u}" for q, u in parts if q) or "0s"


def parse_duration(text: str, *, field: str) -> Duration:
    """``"1y2mo3w4d5h6min7s"`` -> :class:`Duration`. Units in that order, each at
    most once; ``m`` alone is refused as ambiguous (see :data:`AMBIGUOUS_UNIT`).
    Raises :class:`SpecError` naming ``field``."""
    if not isinstance(text, str) or not text:
        raise SpecError(field, f"{_short(text)} is not a duration; {_DURATION_HELP}")
    if AMBIGUOUS_UNIT.search(text):
        raise SpecError(field, f"{_short(text)}: {_AMBIGUOUS_TEXT}")
    m = _DURATION_RE.match(text)
    if not m:
        raise SpecError(field, f"{_short(text)} is not a duration; {_DURATION_HELP}")
    g = m.groups()
    months = int(g[0] or 0) * 12 + int(g[1] or 0)
    seconds = sum(int(v) * u for v, u in zip(g[2:], _FIXED_SECONDS, strict=True) if v)
    if months > 12 * _MAX_YEARS or seconds > _MAX_YEARS * 366 * 86400:
        # Past any date a clock can hold: arithmetic on such a span overflows a float.
        raise SpecError(field, f"{_short(text)} is longer than {_MAX_YEARS} years")
    return Duration(months=months, seconds=seconds)


_MAX_YEARS = 10_000


def parse_fixed_duration(text: str, *, field: str) -> int:
    """A duration of fixed length in seconds, for fields where a calendar month
    would be read against an arbitrary date (clock skew, S3 version and upload
    ages, which S3 Lifecycle itself counts in days): ``y``/``mo`` are refused."""
    d = parse_duration(text, field=field)
    if d.months:
        raise SpecError(field, f"{_short(text)}: months and years have no fixed length here; "
                               "write days, e.g. 30d or 365d")
    return d.seconds


_QUANTITY_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_QUANTITY_UNITS = {
    None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
QUANTITY_PATTERN = r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$"


def parse_quantity(value: str | int, *, field: str) -> int:
    """A byte size: an integer or a Kubernetes-style quantity (``500Gi``, ``10M``)."""
    if isinstance(value, bool):
        raise SpecError(field, "must be a size such as 500Gi, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise SpecError(field, "must not be negative")
        return value
    m = _QUANTITY_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise SpecError(field, f"{_short(value)} is not a size; use e.g. 500Gi, 10M, 1024")
    return int(m.group(1)) * _QUANTITY_UNITS[m.group(2)]


@functools.cache
def _zone_names() -> frozenset[str]:
    # "localtime" is whatever zone the host runs in: not a name a policy can mean.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def _time_zone(raw: Mapping[str, Any], key: str, path: str) -> str:
    """An IANA time zone name, checked against the zone database: a typo
    (``Europe/Berln``) is an error naming the field here, not an exception at every
    run. Omitted means ``UTC``; an empty string is an error, not a silent UTC."""
    v = raw.get(key)
    if v is None:
        return "UTC"
    f = f"{path}.{key}"
    if not isinstance(v, str) or not v:
        raise SpecError(f, "must be an IANA time zone name such as Europe/Berlin "
                           f"(omit it for UTC), got {_short(v)}")
    names = _zone_names()
    if v == "UTC" or v in names:
        return v
    if not names:
        raise SpecError(f, f"{_short(v)} cannot be checked: this host has no time zone "
                           "database (install tzdata), so only UTC is usable")
    guess = {n.lower(): n for n in names}.get(v.strip().lower()) or next(
        iter(difflib.get_close_matches(v, names, n=1, cutoff=0.75)), None)
    hint = f"did you mean {guess}?" if guess else "use e.g. Europe/Berlin, America/New_York, UTC"
    raise SpecError(f, f"{_short(v)} is not an IANA time zone name; {hint}")


def _short(v: Any) -> str:
    """``repr(v)`` cut to 80 characters: an error echoes what the user wrote,
    and must stay one readable line whatever that was."""
    try:
        text = repr(v)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return f"an integer of {v.bit_length()} bits"
    return text if len(text) <= 80 else text[:77] + "..."


# --- the spec ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PosixTarget:
    path: str
    #: A file that must exist in the root before anything is deleted: an
    #: unmounted export then means zero deletes, not deleting the mount point.
    sentinel: str | None = None
    pruneEmptyDirs: bool = False


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    accessKeyIdKey: str = "AWS_ACCESS_KEY_ID"
    secretAccessKeyKey: str = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True, slots=True)
class S3Target:
    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    forcePathStyle: bool = False
    credentialsSecretRef: SecretRef | None = None
    #: Remove noncurrent versions older than this many seconds (versioned buckets).
    noncurrentVersionsMaxAge: int | None = None
    #: Abort multipart uploads started longer ago than this many seconds.
    abortIncompleteUploadsAfter: int | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    minSize: int | None = None
    maxSize: int | None = None


@dataclass(frozen=True, slots=True)
class Validity:
    """What makes an item count towards ``keepLast`` (failed backups never do)."""

    minSize: int | None = None
    markerFile: str | None = None


@dataclass(frozen=True, slots=True)
class CalendarRules:
    """Counts of 0 mean "not set", as in restic and kopia (never "keep none")."""

    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    #: Keep everything within this span of the newest valid item (restic's
    #: ``--keep-within``), not of now; ``None`` = not set (a zero span is not set).
    within: Duration | None = None

    def any(self) -> bool:
        return bool(self.hourly or self.daily or self.weekly or self.monthly or self.yearly
                    or (self.within is not None and not self.within.is_zero()))


@dataclass(frozen=True, slots=True)
class Rules:
    maxAge: Duration | None = None  # by mtime, from now
    #: The safety floor, by the newest of mtime and ctime (when the item arrived).
    minAge: Duration | None = None
    keepLast: int | None = None  # None = not set; a policy's 0 also means not set
    maxTotalSize: int | None = None  # bytes
    calendar: CalendarRules = field(default_factory=CalendarRules)
    #: IANA zone for calendar buckets (which day an item belongs to).
    timeZone: str = "UTC"
    validity: Validity | None = None

    def deletes_anything(self) -> bool:
        """An empty rule set keeps everything (I8)."""
        return self.maxAge is not None or self.maxTotalSize is not None or (
            bool(self.keepLast) or self.calendar.any()
        )


@dataclass(frozen=True, slots=True)
class GroupBy:
    depth: int


@dataclass(frozen=True, slots=True)
class Safety:
    maxDeletes: int | None = None
    maxDeletePercent: int | None = None
    #: Refuse to run when the storage clock and ours differ by more than this (s).
    maxClockSkew: int = 300
    #: A plan that deletes every selected item (and at least one) runs only with
    #: this set; otherwise it stops like the other brakes.
    allowDeleteAll: bool = False


@dataclass(frozen=True, slots=True)
class ManifestSpec:
    path: str
    format: Literal["json"] = "json"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    namespace: str
    target: PosixTarget | S3Target
    selection: Selection = field(default_factory=Selection)
    rules: Rules = field(default_factory=Rules)
    groupBy: GroupBy | None = None
    schedule: str | None = None
    timeZone: str = "UTC"
    suspend: bool = False
    mode: Mode = "Plan"
    safety: Safety = field(default_factory=Safety)
    manifest: ManifestSpec | None = None
    #: Where ledger files go, relative to the target root.
    ledgerPath: str = ".lethe/ledger"
    #: Keys per journaled delete batch (1..1000; 1,000 is S3 DeleteObjects' cap and the
    #: journal's). Smaller batches suit slow storage: each batch is one Raft entry, one
    #: ledger file and the unit a new leader re-checks after a failover.
    batchSize: int = 1000


# --- parsing -------------------------------------------------------------------


def _obj(raw: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object")
    unknown = sorted(set(raw) - allowed, key=repr)  # YAML keys may be ints, null, ...
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise SpecError(f"{path}.{unknown[0]}", f"unknown field; allowed: {allowed_text}")
    return raw


def _int(raw: Mapping[str, Any], key: str, path: str, *, lo: int = 0, hi: int | None = None
         ) -> int | None:
    v = raw.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{path}.{key}", f"must be an integer, got {_short(v)}")
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise SpecError(f"{path}.{key}", f"must be in {rng}, got {_short(v)}")
    return v


def _str(raw: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    v = raw.get(key)
    if v is None:
        if required:
            raise SpecError(f"{path}.{key}", "is required")
        return None
    if not isinstance(v, str) or (required and not v):
        raise SpecError(f"{path}.{key}", f"must be a non-empty string, got {_short(v)}")
    if "\x00" in v:  # no path, key, URL or name can hold one; os calls raise on it
        raise SpecError(f"{path}.{key}", f"must not contain a NUL character, got {_short(v)}")
    return v


def _bool(raw: Mapping[str, Any], key: str, path: str) -> bool:
    v = raw.get(key, False)
    if not isinstance(v, bool):
        raise SpecError(f"{path}.{key}", f"must be true or false, got {_short(v)}")
    return v


def _dur(raw: Mapping[str, Any], key: str, path: str) -> Duration | None:
    v = raw.get(key)
    return None if v is None else parse_duration(v, field=f"{path}.{key}")


def _fixed_dur(raw: Mapping[str, Any], key: str, path: str) -> int | None:
    v = raw.get(key)
    return None if v is None else parse_fixed_duration(v, field=f"{path}.{key}")


def _qty(raw: Mapping[str, Any], key: str, path: str) -> int | None:
    v = raw.get(key)
    return None if v is None else parse_quantity(v, field=f"{path}.{key}")


def _globs(raw: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    v = raw.get(key) or []
    if not isinstance(v, list) or not all(isinstance(g, str) and g for g in v):
        raise SpecError(f"{path}.{key}", "must be a list of non-empty glob strings")
    return tuple(v)


def _target(raw: Any, path: str) -> PosixTarget | S3Target:
    t = _obj(raw, path, {"posix", "s3"})
    if ("posix" in t) == ("s3" in t):
        raise SpecError(path, "exactly one of posix or s3 must be set")
    if "posix" in t:
        p = _obj(t["posix"], f"{path}.posix", {"path", "sentinel", "pruneEmptyDirs"})
        root = _str(p, "path", f"{path}.posix", required=True)
        assert root is not None
        if not root.startswith("/"):
            raise SpecError(f"{path}.posix.path", f"must be an absolute path, got {_short(root)}")
        return PosixTarget(path=root, sentinel=_str(p, "sentinel", f"{path}.posix"),
                           pruneEmptyDirs=_bool(p, "pruneEmptyDirs", f"{path}.posix"))
    sp = f"{path}.s3"
    s = _obj(t["s3"], sp, {"bucket", "prefix", "endpoint", "region", "forcePathStyle",
                           "credentialsSecretRef", "noncurrentVersionsMaxAge",
                           "abortIncompleteUploadsAfter"})
    bucket = _str(s, "bucket", sp, required=True)
    assert bucket is not None
    ref = None
    if s.get("credentialsSecretRef") is not None:
        rp = f"{sp}.credentialsSecretRef"
        r = _obj(s["credentialsSecretRef"], rp, {"name", "accessKeyIdKey", "secretAccessKeyKey"})
        name = _str(r, "name", rp, required=True)
        assert name is not None
        ref = SecretRef(name=name,
                        accessKeyIdKey=_str(r, "accessKeyIdKey", rp) or "AWS_ACCESS_KEY_ID",
                        secretAccessKeyKey=_str(r, "secretAccessKeyKey", rp)
                        or "AWS_SECRET_ACCESS_KEY")
    prefix = _str(s, "prefix", sp) or ""
    if prefix and not prefix.endswith("/"):
        # Keys are relative to the prefix as to a folder (globs, manifest, ledger):
        # "tmp" would make tmp/x the key "/x" and put the manifest at "tmpmanifest.json".
        raise SpecError(f"{sp}.prefix", f"{_short(prefix)} must end with '/' (a folder): "
                                        f"write {_short(prefix + '/')}")
    return S3Target(bucket=bucket, prefix=prefix,
                    endpoint=_endpoint(s, sp), region=_region(s, sp),
                    forcePathStyle=_bool(s, "forcePathStyle", sp), credentialsSecretRef=ref,
                    noncurrentVersionsMaxAge=_fixed_dur(s, "noncurrentVersionsMaxAge", sp),
                    abortIncompleteUploadsAfter=_fixed_dur(s, "abortIncompleteUploadsAfter", sp))


#: botocore's rule for a region name (``botocore.utils.validate_region_name``): a
#: host label, not all digits, as it becomes part of the endpoint's host name.
_REGION_RE = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)$")


def _region(raw: Mapping[str, Any], path: str) -> str | None:
    v = _str(raw, "region", path)
    if v is not None and not _REGION_RE.match(v):  # botocore raised it at run time
        raise SpecError(f"{path}.region", f"{_short(v)} is not a region name such as "
                                          "us-east-1 or eu-west-3")
    return v


def _endpoint(raw: Mapping[str, Any], path: str) -> str | None:
    v = _str(raw, "endpoint", path)
    if v is None:
        return None
    try:
        u = urllib.parse.urlsplit(v)
        ok = u.scheme in ("http", "https") and bool(u.hostname) and (u.port or 1) > 0
    except ValueError:  # "http://[::1", "http://h:99999"
        ok = False
    if not ok:
        raise SpecError(f"{path}.endpoint", f"{_short(v)} is not an http(s) URL such as "
                                            "http://minio:9000")
    return v


_CAL = {"keepHourly": "hourly", "keepDaily": "daily", "keepWeekly": "weekly",
        "keepMonthly": "monthly", "keepYearly": "yearly"}


def _rules(raw: Any, path: str) -> Rules:
    r = _obj(raw, path, {"maxAge", "minAge", "keepLast", "maxTotalSize", "keepWithin",
                         "timeZone", "validity", *_CAL})
    # A keep count or keepWithin of 0 means "not set", as in restic and kopia: a
    # 0 that meant "keep none" turned `keepLast: 0` alone into "delete everything".
    within = _dur(r, "keepWithin", path)
    cal = CalendarRules(within=None if within is None or within.is_zero() else within,
                        **{v: _int(r, k, path) or 0 for k, v in _CAL.items()})
    validity = None
    if r.get("validity") is not None:
        vp = f"{path}.validity"
        v = _obj(r["validity"], vp, {"minSize", "markerFile"})
        validity = Validity(minSize=_qty(v, "minSize", vp), markerFile=_str(v, "markerFile", vp))
    rules = Rules(maxAge=_dur(r, "maxAge", path), minAge=_dur(r, "minAge", path),
                  keepLast=_int(r, "keepLast", path) or None,
                  maxTotalSize=_qty(r, "maxTotalSize", path),
                  calendar=cal, timeZone=_time_zone(r, "timeZone", path), validity=validity)
    if r and not (rules.maxAge is not None or rules.maxTotalSize is not None
                  or rules.keepLast is not None or any(r.get(k) for k in _CAL)):
        raise SpecError(path, "at least one deletion rule (keepLast, maxAge, maxTotalSize or "
                              "a calendar rule such as keepDaily) is required; a keep count "
                              "of 0 means not set, as in restic; omit rules entirely to keep "
                              "everything")
    return rules


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def _schedule(raw: Any, path: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise SpecError(path, "must be a cron string such as '0 3 * * *'")
    if raw.startswith("@"):
        if raw not in {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                       "@hourly"}:
            raise SpecError(path, f"{_short(raw)} is not a known cron macro")
        return raw
    fields = raw.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise SpecError(path, f"{_short(raw)} is not a cron schedule of five fields, "
                              "e.g. '0 3 * * *'")
    try:  # out-of-range values (61 * * * *), and dates that never come (0 0 30 2 *)
        croniter(raw, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterError as e:
        never = isinstance(e, CroniterBadDateError)
        raise SpecError(path, f"{_short(raw)} " + ("never matches a date" if never else
                              "is not a valid cron schedule (minute 0-59, hour 0-23, "
                              "day 1-31, month 1-12, weekday 0-7)")) from e
    return raw


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """Parse a whole ``RetentionPolicy`` object (as from YAML or the API)."""
    if obj.get("kind") not in (None, "RetentionPolicy"):
        raise SpecError("kind", f"expected RetentionPolicy, got {_short(obj.get('kind'))}")
    meta = obj.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise SpecError("metadata", "must be an object")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError("metadata.name", "is required")
    namespace = meta.get("namespace") or "default"
    # What the API server enforces, so a policy file means the same to the CLI (which
    # keeps its journal under <state-dir>/<namespace>/<name>) as to the cluster.
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise SpecError("metadata.name", f"{_short(name)} is not a valid name: lower-case "
                                         "letters, digits, '-' and '.', e.g. app-logs")
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise SpecError("metadata.namespace", f"{_short(namespace)} is not a valid namespace: "
                                              "lower-case letters, digits and '-'")
    return parse_spec(obj.get("spec"), name=name, namespace=namespace)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def parse_spec(raw: Any, *, name: str, namespace: str, path: str = "spec") -> Policy:
    s = _obj(raw, path, {"target", "select", "rules", "groupBy", "schedule", "timeZone",
                         "suspend", "mode", "safety", "manifest", "ledgerPath", "batchSize"})
    if "target" not in s:
        raise SpecError(f"{path}.target", "is required")
    sel = _obj(s.get("select"), f"{path}.select", {"include", "exclude", "minSize", "maxSize"})
    sp = f"{path}.select"
    selection = Selection(include=_globs(sel, "include", sp), exclude=_globs(sel, "exclude", sp),
                          minSize=_qty(sel, "minSize", sp), maxSize=_qty(sel, "maxSize", sp))
    group = None
    if s.get("groupBy") is not None:
        g = _obj(s["groupBy"], f"{path}.groupBy", {"depth"})
        depth = _int(g, "depth", f"{path}.groupBy", lo=1, hi=32)
        if depth is None:
            raise SpecError(f"{path}.groupBy.depth", "is required")
        group = GroupBy(depth=depth)
    mode = s.get("mode", "Plan")
    if mode not in ("Plan", "Enforce"):
        raise SpecError(f"{path}.mode", f"must be Plan or Enforce, got {_short(mode)}")
    sf = _obj(s.get("safety"), f"{path}.safety", {"maxDeletes", "maxDeletePercent",
                                                   "maxClockSkew", "allowDeleteAll"})
    skew = _fixed_dur(sf, "maxClockSkew", f"{path}.safety")
    safety = Safety(maxDeletes=_int(sf, "maxDeletes", f"{path}.safety"),
                    maxDeletePercent=_int(sf, "maxDeletePercent", f"{path}.safety", lo=1, hi=100),
                    maxClockSkew=skew or 300,  # 0 = not set, like a keep count
                    allowDeleteAll=_bool(sf, "allowDeleteAll", f"{path}.safety"))
    manifest = None
    if s.get("manifest") is not None:
        m = _obj(s["manifest"], f"{path}.manifest", {"path", "format"})
        mpath = _str(m, "path", f"{path}.manifest", required=True)
        assert mpath is not None
        if m.get("format", "json") != "json":
            raise SpecError(f"{path}.manifest.format", "only json is supported")
        manifest = ManifestSpec(path=mpath)
    return Policy(
        name=name, namespace=namespace, target=_target(s["target"], f"{path}.target"),
        selection=selection, rules=_rules(s.get("rules"), f"{path}.rules"), groupBy=group,
        schedule=_schedule(s.get("schedule"), f"{path}.schedule"),
        timeZone=_time_zone(s, "timeZone", path), suspend=_bool(s, "suspend", path),
        mode=mode, safety=safety, manifest=manifest,
        ledgerPath=_str(s, "ledgerPath", path) or ".lethe/ledger",
        batchSize=_int(s, "batchSize", path, lo=1, hi=1000) or 1000,
    )
