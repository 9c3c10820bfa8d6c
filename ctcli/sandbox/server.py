"""A CleverTap-compatible REST API on loopback, for tests, `--sandbox` and `ctcli sandbox`.

It speaks the two endpoints ctcli uses, `POST /1/upload` and `POST /1/delete/profiles.json`,
with CleverTap's credential headers, its 1000-record and 100-identity limits, its per-record
error codes (1-based record numbers) and its concurrency limit (429 beyond 15 requests in flight).
Faults (failures, dropped connections, latency, whole-batch refusals, a gate that holds requests
until released) can be switched on while it runs, in-process with `Sandbox.set_faults` or over
HTTP with `POST /_sandbox/faults`.

Admin endpoints, loopback test aids that need no credentials and count toward nothing:
`GET /_sandbox/state[?profiles=0]`, `POST /_sandbox/faults`, `POST /_sandbox/release`,
`POST /_sandbox/reset`.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import random
import re
import shlex
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import orjson

from ctcli.errors import ConfigError

__all__ = ["DEFAULT_CREDENTIAL", "Sandbox", "serve"]

DEFAULT_CREDENTIAL = "sandbox"
UPLOAD_PATH = "/1/upload"
DELETE_PATH = "/1/delete/profiles.json"
ADMIN_PREFIX = "/_sandbox/"
MAX_UPLOAD_RECORDS = 1000
MAX_DELETE_IDENTITIES = 100
MAX_BODY_BYTES = 64 * 1024 * 1024
ACCOUNT_HEADER = "X-CleverTap-Account-Id"
PASSCODE_HEADER = "X-CleverTap-Passcode"

# Epoch seconds stay below this until the year 5138; a millisecond timestamp of today is above it.
_MAX_EPOCH_SECONDS = 10**11
_IDENTITY_KEYS = ("identity", "objectId", "FBID", "GPID")
# "Plausible" on purpose: something, one @, a dotted domain not starting with a dot, no spaces.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.][^@\s]*\.[^@\s]+")

# Set on an answer to have its body sent a byte at a time (the drip fault); never sent itself.
_DRIP_HEADER = "X-Sandbox-Drip"
# (status, body, extra headers); None stands for "drop the connection without an answer".
_Answer = tuple[int, bytes, tuple[tuple[str, str], ...]]


def _fail_body(code: int, error: str) -> bytes:
    return orjson.dumps({"status": "fail", "error": error, "code": code})


_MALFORMED = (400, _fail_body(400, "Malformed request"), ())
_UNAUTHORIZED = (401, _fail_body(401, "Invalid Credentials"), ())
_TOO_MANY = (429, _fail_body(429, "Too many concurrent requests"), ())
_NOT_FOUND = (404, _fail_body(404, "Not found"), ())
_NOT_ALLOWED = (405, _fail_body(405, "Method not allowed"), (("Allow", "POST"),))
_DEFAULT_FAULT_ERRORS = {
    400: "Malformed request",
    401: "Invalid Credentials",
    429: "Too many concurrent requests",
}


# --- per-record validation -------------------------------------------------------------------


def _is_email(value: object) -> bool:
    return type(value) is str and len(value) <= 254 and _EMAIL.fullmatch(value) is not None


def _is_phone(value: object) -> bool:
    # ^\+[1-9]\d{6,14}$ with ASCII digits only (str.isdigit would accept other scripts' digits).
    if type(value) is not str or not 8 <= len(value) <= 16 or value[0] != "+":
        return False
    digits = value[1:]
    return digits.isascii() and digits.isdigit() and digits[0] != "0"


def _one_of(*allowed: str) -> Callable[[object], bool]:
    choices = frozenset(allowed)
    return lambda value: type(value) is str and value in choices


# Checked in this order, so a record with several bad fields reports the lowest code, as listed.
_PROFILE_FIELD_RULES: tuple[tuple[str, Callable[[object], bool], int, str], ...] = (
    ("Gender", _one_of("M", "F", "O", "U"), 514, "Gender value invalid"),
    ("Email", _is_email, 515, "Email address invalid"),
    ("Phone", _is_phone, 516, "Phone number invalid"),
    ("Employed", _one_of("Y", "N"), 517, "Employed value invalid"),
    ("Education", _one_of("School", "College", "Graduate"), 518, "Education value invalid"),
    ("Married", _one_of("Y", "N"), 519, "Married value invalid"),
)


def _identity_of(record: dict[str, Any]) -> str | None:
    for key in _IDENTITY_KEYS:
        value = record.get(key)
        if type(value) is str and value and not value.isspace():
            return value
    return None


def _has_marked_identity(records: list[Any], marker: str) -> bool:
    for record in records:
        if type(record) is dict:
            identity = _identity_of(record)
            if identity is not None and identity.startswith(marker):
                return True
    return False


def _record_error(record: object) -> tuple[int, str] | None:
    """The first CleverTap per-record error of `record`, or None when it would be accepted."""
    if type(record) is not dict:
        return 512, "Invalid record structure"
    kind = record.get("type")
    if kind == "event":
        name = record.get("evtName")
        if type(name) is not str or not name:
            return 509, "Event name is mandatory"
    elif kind != "profile":
        return 524, "Record type is neither event nor profile"
    if _identity_of(record) is None:
        return 523, "Identity is mandatory"
    if "ts" in record:
        ts = record["ts"]
        if type(ts) is not int or ts >= _MAX_EPOCH_SECONDS:
            return 525, "Timestamp is not in epoch seconds"
    if kind == "event":
        data = record.get("evtData")
        if data is not None and type(data) is not dict:
            return 512, "evtData must be an object"
        return None
    data = record.get("profileData")
    if data is None:
        return None
    if type(data) is not dict:
        return 512, "profileData must be an object"
    for key, is_valid, code, error in _PROFILE_FIELD_RULES:
        if key in data:
            value = data[key]
            # An update operator such as {"$delete": 1} is not a value to validate.
            if type(value) is not dict and not is_valid(value):
                return code, error
    return None


# --- profile storage -------------------------------------------------------------------------


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return list(value) if type(value) is list else [value]


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _merge_profile_data(stored: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply one upload's profileData to a stored profile, honouring CleverTap's operators.

    Lists are always replaced, never changed in place, so shallow copies handed out by
    `Sandbox.profiles()` never change under their reader.
    """
    for key, value in update.items():
        if type(value) is not dict or len(value) != 1:
            stored[key] = value
            continue
        ((op, arg),) = value.items()
        current = stored.get(key)
        if op == "$add":
            merged = _as_list(current)
            merged.extend(item for item in _as_list(arg) if item not in merged)
            stored[key] = merged
        elif op == "$remove":
            gone = _as_list(arg)
            if type(current) is list:
                stored[key] = [item for item in current if item not in gone]
            elif current in gone:
                del stored[key]
        elif (
            op in ("$incr", "$decr")
            and _is_number(arg)
            and (_is_number(current) or current is None)
        ):
            sign = 1 if op == "$incr" else -1
            stored[key] = (current or 0) + sign * arg
        elif op == "$delete":
            stored.pop(key, None)
        else:
            stored[key] = value


# --- faults and statistics -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Faults:
    fail_every: int = 0
    fail_status: int = 500
    fail_body: dict[str, Any] | None = None
    drop_every: int = 0
    latency: float = 0.0
    jitter: float = 0.0
    drip: float = 0.0
    retry_after: float | None = None
    bad_batch_marker: str | None = None
    hold: bool = False
    stall_request: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_every", "drop_every", "stall_request"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
        if type(self.fail_status) is not int or not 100 <= self.fail_status <= 599:
            raise ValueError(
                f"fail_status must be an HTTP status 100..599, not {self.fail_status!r}"
            )
        if not _is_number(self.latency) or self.latency < 0:
            raise ValueError(f"latency must be a number >= 0, not {self.latency!r}")
        if not _is_number(self.jitter) or self.jitter < 0:
            raise ValueError(f"jitter must be a number >= 0, not {self.jitter!r}")
        if not _is_number(self.drip) or self.drip < 0:
            raise ValueError(f"drip must be a number >= 0, not {self.drip!r}")
        if self.retry_after is not None and (
            not _is_number(self.retry_after) or self.retry_after < 0
        ):
            raise ValueError(f"retry_after must be a number >= 0 or null, not {self.retry_after!r}")
        if self.fail_body is not None and type(self.fail_body) is not dict:
            raise ValueError("fail_body must be a JSON object or null")
        if self.bad_batch_marker is not None and (
            type(self.bad_batch_marker) is not str or not self.bad_batch_marker
        ):
            raise ValueError("bad_batch_marker must be a non-empty string or null")
        if type(self.hold) is not bool:
            raise ValueError(f"hold must be true or false, not {self.hold!r}")

    def failure(self) -> _Answer:
        status = self.fail_status
        if self.fail_body is not None:
            body = orjson.dumps(self.fail_body)
        else:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Injected failure"
            body = _fail_body(status, _DEFAULT_FAULT_ERRORS.get(status, phrase))
        headers: tuple[tuple[str, str], ...] = ()
        if self.retry_after is not None:
            headers = (("Retry-After", f"{self.retry_after:g}"),)
        return status, body, headers


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    upload_requests: int = 0
    delete_requests: int = 0
    max_in_flight_seen: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    delete_sizes: list[int] = field(default_factory=list)
    status_counts: Counter[int] = field(default_factory=Counter)
    records_processed: int = 0
    records_unprocessed: int = 0
    events_processed: int = 0
    dropped: int = 0
    faults_injected: int = 0
    # Order checks: requests that arrived while another request naming one of their identities
    # was still in flight, and requests that named one identity twice.
    identity_overlaps: int = 0
    repeated_identities: int = 0

    def snapshot(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["batch_sizes"] = list(self.batch_sizes)
        data["delete_sizes"] = list(self.delete_sizes)
        data["status_counts"] = dict(self.status_counts)
        return data


# --- the server --------------------------------------------------------------------------------


class Sandbox:
    """The loopback CleverTap API, served from a daemon thread.

    `with Sandbox(project_id="ACC", passcode="pw") as sandbox:` starts it on a free port of
    127.0.0.1; point a client at `sandbox.url`. Every public method is thread-safe.
    """

    def __init__(
        self,
        *,
        project_id: str = DEFAULT_CREDENTIAL,
        passcode: str = DEFAULT_CREDENTIAL,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int = 15,
        latency: float = 0.0,
    ) -> None:
        """`latency` seconds are added to every API answer and survive `reset()`."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.project_id = project_id
        self._account = project_id.encode("utf-8", "surrogateescape")
        self._passcode = passcode.encode("utf-8", "surrogateescape")
        self.host = host
        self.port = port
        self.max_in_flight = max_in_flight
        self._base_latency = float(latency)
        self._lock = threading.Lock()
        # Held requests wait on this; release() moves them on by starting a new hold round.
        self._gate = threading.Condition(self._lock)
        self._held = 0  # requests waiting in the current hold round
        self._hold_round = 0
        self._profiles: dict[str, list[Any]] = {}  # identity -> [profileData, ts]
        self._deleted: list[str] = []
        self._stats = _Stats()
        self._faults = _Faults()
        self._fault_sequence = 0
        self._in_flight = 0
        self._busy: Counter[str] = Counter()  # identities named by requests in flight
        self._random = random.Random()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Sandbox:
        """Listen and serve in a daemon thread; ConfigError when the port cannot be had."""
        if self._server is not None:
            return self
        try:
            server = _Server((self.host, self.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {self.port} on {self.host} is already in use") from None
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval keeps stop() quick; idle cost is a few wake-ups a second.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ctcli-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, let held requests go and close open keep-alive connections.

        Safe to call twice.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        with self._lock:
            self._release_held()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, like `http://127.0.0.1:PORT` (the real port once started)."""
        return f"http://{self.host}:{self.port}"

    # faults

    def set_faults(
        self,
        *,
        fail_every: int = 0,
        fail_status: int = 500,
        fail_body: dict[str, Any] | None = None,
        drop_every: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        drip: float = 0.0,
        retry_after: float | None = None,
        bad_batch_marker: str | None = None,
        hold: bool = False,
        stall_request: int = 0,
    ) -> None:
        """Replace the fault settings and restart the fault request counter at zero.

        The counter numbers (from 1) each API request that passes the credential and
        concurrency checks; admin requests, 401s and 429s are not numbered. Request n is
        dropped when `drop_every` divides n (its body read, the connection closed, no answer);
        otherwise it is answered `fail_status` when `fail_every` divides n. Failed and dropped
        requests are not processed. `latency` seconds pass before every API answer, while the
        request counts as in flight, plus a random share of `jitter` seconds drawn per request:
        requests then overtake each other, and since the sandbox applies each request's records
        when it processes them, a client that sends one identity twice at once loses its order.
        With `drip`, an API answer's headers go at once and its body one byte every `drip`
        seconds (after the records were applied): a read timeout never fires on such a server.
        With `bad_batch_marker`, an upload holding any record whose
        identity starts with it is refused as a whole with 400 Malformed request.

        With `hold`, each such request waits, in flight, before anything else happens to it, until
        `release()` (`POST /_sandbox/release`), `reset()`, `stop()` or new fault settings without
        `hold` let it go; it then goes on under the faults it was admitted with. Holding stays on
        after a release: later requests are held again. `stall_request` n holds request n alone
        that way (one slow batch among quick ones). `stats()["held"]` says how many wait now
        and `wait_held(n)` waits for n of them: a deterministic stand-in for "slow enough".
        """
        faults = _Faults(
            fail_every=fail_every,
            fail_status=fail_status,
            fail_body=dict(fail_body) if fail_body is not None else None,
            drop_every=drop_every,
            latency=latency,
            jitter=jitter,
            drip=drip,
            retry_after=retry_after,
            bad_batch_marker=bad_batch_marker,
            hold=hold,
            stall_request=stall_request,
        )
        with self._lock:
            self._faults = faults
            self._fault_sequence = 0
            if not (hold or stall_request):
                self._release_held()

    def release(self) -> int:
        """Let every request held right now go on; returns how many. Holding stays on."""
        with self._lock:
            return self._release_held()

    def wait_held(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least `count` requests are held; False if `timeout` seconds pass first."""
        with self._gate:
            return self._gate.wait_for(lambda: self._held >= count, timeout)

    def _release_held(self) -> int:
        # Called with self._lock held. A released request leaves the count at once, so a
        # following wait_held() counts only requests held after this release.
        released = self._held
        self._held = 0
        self._hold_round += 1
        self._gate.notify_all()
        return released

    def clear_faults(self) -> None:
        """Switch every fault off."""
        self.set_faults()

    def faults(self) -> dict[str, Any]:
        """The current fault settings, as set_faults keyword arguments."""
        with self._lock:
            return asdict(self._faults)

    # introspection

    def profiles(self) -> dict[str, dict[str, Any]]:
        """A copy of the stored profiles: identity -> {"profileData": {...}, "ts": int}."""
        with self._lock:
            return {
                identity: {"profileData": dict(data), "ts": ts}
                for identity, (data, ts) in self._profiles.items()
            }

    def profile_count(self) -> int:
        with self._lock:
            return len(self._profiles)

    def deleted(self) -> list[str]:
        """Every identity or guid named in a delete request, in the order received."""
        with self._lock:
            return list(self._deleted)

    def stats(self) -> dict[str, Any]:
        """Counters since start or reset.

        requests: every non-admin request; upload_requests / delete_requests: those the sandbox
        went on to read (authenticated, admitted, not failed or dropped by a fault);
        batch_sizes / delete_sizes: record or identity count of each one it processed;
        status_counts: HTTP status -> answers; dropped and faults_injected: fault outcomes;
        max_in_flight_seen: peak of admitted requests in flight at once; held: requests the
        `hold` fault keeps waiting right now (not reset by `reset()`, which lets them go).
        """
        with self._lock:
            return self._stats_snapshot()

    def _stats_snapshot(self) -> dict[str, Any]:
        data = self._stats.snapshot()
        data["held"] = self._held
        return data

    def reset(self) -> None:
        """Forget profiles, deletions and statistics, switch faults off, let held requests go."""
        with self._lock:
            self._profiles.clear()
            self._deleted.clear()
            self._stats = _Stats()
            self._faults = _Faults()
            self._fault_sequence = 0
            self._release_held()

    def state(self, *, include_profiles: bool = True) -> dict[str, Any]:
        """What `GET /_sandbox/state` answers."""
        with self._lock:
            state: dict[str, Any] = {}
            if include_profiles:
                state["profiles"] = {
                    identity: {"profileData": dict(data), "ts": ts}
                    for identity, (data, ts) in self._profiles.items()
                }
            else:
                state["profile_count"] = len(self._profiles)
            state["deleted"] = list(self._deleted)
            state["stats"] = self._stats_snapshot()
            state["faults"] = asdict(self._faults)
            return state

    # request handling (called from the server's handler threads)

    def _record_status(self, answer: _Answer) -> _Answer:
        with self._lock:
            self._stats.status_counts[answer[0]] += 1
        return answer

    def _handle_api(
        self, method: str, path: str, account: str | None, passcode: str | None, body: bytes
    ) -> _Answer | None:
        with self._lock:
            self._stats.requests += 1
        if path not in (UPLOAD_PATH, DELETE_PATH):
            return self._record_status(_NOT_FOUND)
        if method != "POST":
            return self._record_status(_NOT_ALLOWED)
        if not (_same(account, self._account) and _same(passcode, self._passcode)):
            return self._record_status(_UNAUTHORIZED)
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                self._stats.status_counts[429] += 1
                return _TOO_MANY
            self._in_flight += 1
            if self._in_flight > self._stats.max_in_flight_seen:
                self._stats.max_in_flight_seen = self._in_flight
            self._fault_sequence += 1
            sequence = self._fault_sequence
            faults = self._faults
            jitter = self._random.random() * faults.jitter if faults.jitter else 0.0
        try:
            document = _parse_body(body)
            names = _named_identities(path, document)
        except ValueError:
            document, names = None, []
        self._mark_busy(names)
        try:
            if faults.hold or sequence == faults.stall_request:
                with self._lock:
                    self._hold()
            delay = self._base_latency + faults.latency + jitter
            if delay > 0:
                time.sleep(delay)
            if faults.drop_every and sequence % faults.drop_every == 0:
                with self._lock:
                    self._stats.dropped += 1
                    self._stats.faults_injected += 1
                return None
            if faults.fail_every and sequence % faults.fail_every == 0:
                with self._lock:
                    self._stats.faults_injected += 1
                return self._record_status(faults.failure())
            if path == UPLOAD_PATH:
                answer = self._upload(document, faults.bad_batch_marker)
            else:
                answer = self._delete(document)
            if faults.drip:
                answer = (*answer[:2], (*answer[2], (_DRIP_HEADER, f"{faults.drip:g}")))
            return self._record_status(answer)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._busy.subtract(names)
                for name in names:
                    if self._busy[name] <= 0:
                        del self._busy[name]

    def _mark_busy(self, names: list[str]) -> None:
        with self._lock:
            busy = self._busy
            if any(name in busy for name in names):
                self._stats.identity_overlaps += 1
            if len(set(names)) < len(names):
                self._stats.repeated_identities += 1
            busy.update(names)

    def _hold(self) -> None:
        # Called with self._lock held (the gate's lock); wait() gives it up while waiting.
        if self._server is None:
            return  # stopping: nothing would ever release it
        self._held += 1
        self._gate.notify_all()  # wake wait_held()
        round_ = self._hold_round
        while self._hold_round == round_:
            self._gate.wait()

    def _upload(self, document: Any, bad_batch_marker: str | None) -> _Answer:
        with self._lock:
            self._stats.upload_requests += 1
        records = document.get("d") if type(document) is dict else None
        if type(records) is not list:
            return _MALFORMED
        if len(records) > MAX_UPLOAD_RECORDS:
            error = (
                f"Too many records: at most {MAX_UPLOAD_RECORDS} per request, got {len(records)}"
            )
            return 400, _fail_body(400, error), ()
        if bad_batch_marker is not None and _has_marked_identity(records, bad_batch_marker):
            return _MALFORMED

        unprocessed: list[dict[str, Any]] = []
        updates: list[tuple[str, dict[str, Any], int | None]] = []
        events = 0
        for number, record in enumerate(records, start=1):
            problem = _record_error(record)
            if problem is not None:
                code, error = problem
                unprocessed.append(
                    {
                        "status": "fail",
                        "code": code,
                        "error": f"{error}. Skipped record number : {number}",
                        "record": record,
                    }
                )
            elif record["type"] == "profile":
                identity = _identity_of(record)
                assert identity is not None  # guaranteed by _record_error
                updates.append((identity, record.get("profileData") or {}, record.get("ts")))
            else:
                events += 1

        now = int(time.time())
        with self._lock:
            profiles = self._profiles
            for identity, data, ts in updates:
                stored = profiles.get(identity)
                if stored is None:
                    stored = profiles[identity] = [{}, now if ts is None else ts]
                elif ts is not None:
                    stored[1] = ts
                _merge_profile_data(stored[0], data)
            stats = self._stats
            stats.batch_sizes.append(len(records))
            stats.records_processed += len(records) - len(unprocessed)
            stats.records_unprocessed += len(unprocessed)
            stats.events_processed += events

        processed = len(records) - len(unprocessed)
        if not unprocessed:
            status = "success"
        elif processed:
            status = "partial"
        else:
            status = "fail"
        answer = {"status": status, "processed": processed, "unprocessed": unprocessed}
        return 200, orjson.dumps(answer), ()

    def _delete(self, document: Any) -> _Answer:
        with self._lock:
            self._stats.delete_requests += 1
        if type(document) is not dict:
            return _MALFORMED
        has_identity, has_guid = "identity" in document, "guid" in document
        if has_identity == has_guid:
            return 400, _fail_body(400, "Give exactly one of identity or guid"), ()
        value = document["identity" if has_identity else "guid"]
        names = [value] if type(value) is str else value
        if type(names) is not list or not names:
            return _MALFORMED
        if any(type(name) is not str or not name for name in names):
            return _MALFORMED
        if len(names) > MAX_DELETE_IDENTITIES:
            error = (
                f"Too many identities: at most {MAX_DELETE_IDENTITIES} per request, "
                f"got {len(names)}"
            )
            return 400, _fail_body(400, error), ()
        with self._lock:
            # The sandbox keys profiles by identity only, so a guid deletes the profile of
            # that identity, if any.
            for name in names:
                self._profiles.pop(name, None)
            self._deleted.extend(names)
            self._stats.delete_sizes.append(len(names))
        return 200, b'{"status":"success"}', ()

    def _handle_admin(self, method: str, path: str, query: str, body: bytes) -> _Answer:
        if path == "/_sandbox/state" and method == "GET":
            include = parse_qs(query).get("profiles", ["1"])[-1] not in ("0", "false", "no")
            state = self.state(include_profiles=include)
            return 200, orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS), ()
        if path == "/_sandbox/faults" and method == "POST":
            try:
                settings = orjson.loads(body) if body.strip() else {}
                if type(settings) is not dict:
                    raise TypeError("faults must be a JSON object")
                self.set_faults(**settings)
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                return 400, _fail_body(400, f"Bad faults: {exc}"), ()
            return 200, orjson.dumps({"status": "success", "faults": self.faults()}), ()
        if path == "/_sandbox/release" and method == "POST":
            released = self.release()
            return 200, orjson.dumps({"status": "success", "released": released}), ()
        if path == "/_sandbox/reset" and method == "POST":
            self.reset()
            return 200, b'{"status":"success"}', ()
        return _NOT_FOUND


def _parse_body(body: bytes) -> Any:
    """The JSON document of a request body; ValueError when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None


def _named_identities(path: str, document: Any) -> list[str]:
    """Every identity a request names, once per record, for the order checks."""
    if type(document) is not dict:
        return []
    if path == UPLOAD_PATH:
        records = document.get("d")
        if type(records) is not list:
            return []
        names = (_identity_of(record) for record in records if type(record) is dict)
        return [name for name in names if name is not None]
    value = document.get("identity", document.get("guid"))
    names_given = [value] if type(value) is str else value
    if type(names_given) is not list:
        return []
    return [name for name in names_given if type(name) is str]


def _same(given: str | None, expected: bytes) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections would make server_close() wait on their threads forever.
    block_on_close = False
    # The default backlog of 5 drops SYNs when 15 clients connect at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup of the host, which can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is normal traffic, not a sandbox bug.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ctcli-sandbox"
    # Buffer the answer so headers and body leave in one write (no Nagle/delayed-ACK stall).
    wbufsize = -1
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Never log: request headers carry the passcode.
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        parts = urlsplit(self.path)
        sandbox = self.server.sandbox
        try:
            if parts.path.startswith(ADMIN_PREFIX):
                answer: _Answer | None = sandbox._handle_admin(
                    method, parts.path, parts.query, body
                )
            else:
                answer = sandbox._handle_api(
                    method,
                    parts.path,
                    self.headers.get(ACCOUNT_HEADER),
                    self.headers.get(PASSCODE_HEADER),
                    body,
                )
        except Exception:
            answer = (500, _fail_body(500, "Internal sandbox error"), ())
            self.close_connection = True
        if answer is None:
            self.close_connection = True
            return
        self._send(*answer)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(400, _fail_body(400, "Malformed request"), ())
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                size = -1
            total += size
            if size < 0 or total > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(400, _fail_body(400, "Malformed request"), ())
                return None
            if size == 0:
                # Skip optional trailers up to the blank line that ends the message.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        drip = 0.0
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            if name == _DRIP_HEADER:
                drip = float(value)
            else:
                self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not drip:
            self.wfile.write(body)
            return
        self.wfile.flush()
        for index in range(len(body)):
            if self.server.sandbox._server is None:
                return  # stopping
            time.sleep(drip)
            self.wfile.write(body[index : index + 1])
            self.wfile.flush()


# --- foreground server -----------------------------------------------------------------------


def _connection_hint(url: str, project_id: str, passcode: str) -> str:
    # Never echo a chosen passcode: name where it lives instead.
    shown = passcode if passcode == DEFAULT_CREDENTIAL else '"$CTCLI_SANDBOX_PASSCODE"'
    return (
        f"CLEVERTAP_ENDPOINT={url} CLEVERTAP_PROJECT_ID={shlex.quote(project_id)} "
        f"CLEVERTAP_PASSCODE={shown}"
    )


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Make SIGTERM (and Ctrl-C, unless ignored) set `stop`; only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def serve(
    port: int = 8080,
    *,
    project_id: str = DEFAULT_CREDENTIAL,
    passcode: str = DEFAULT_CREDENTIAL,
    latency: float = 0.0,
    out: TextIO,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    """Run the sandbox in the foreground until Ctrl-C, SIGTERM or `stop` is set.

    Prints `CleverTap sandbox listening on http://127.0.0.1:PORT` (the real port when `port`
    is 0), then the environment that points ctcli at it; prints `sandbox stopped` at the end.
    Raises ConfigError when the port is taken.
    """
    stop = stop if stop is not None else threading.Event()
    sandbox = Sandbox(
        project_id=project_id, passcode=passcode, host=host, port=port, latency=latency
    )
    sandbox.start()
    try:
        with _stop_on_signals(stop):
            out.write(f"CleverTap sandbox listening on {sandbox.url}\n")
            out.write(_connection_hint(sandbox.url, project_id, passcode) + "\n")
            out.write("Press Ctrl-C to stop.\n")
            out.flush()
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    out.write("sandbox stopped\n")
    out.flush()
