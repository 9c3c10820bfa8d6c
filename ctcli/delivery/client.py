"""The HTTP client for CleverTap's REST API: requests, answers, retries, concurrency.

Nothing here logs or formats request headers or bodies: the passcode travels in the
`X-CleverTap-Passcode` header and httpx does not mask it, so every error raised from this module
is built from our own words, the URL and the HTTP status, and is raised `from None` so the httpx
exception (which holds the request) is not chained into tracebacks.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, NamedTuple, NoReturn

import httpx
import orjson

from ctcli import __version__
from ctcli.delivery.transport import is_host_name, make_transport, redact_url, request_deadline
from ctcli.errors import ConfigError, CredentialsRejected, Unreachable
from ctcli.models import Outcome

UPLOAD_PATH = "/1/upload"
DELETE_PATH = "/1/delete/profiles.json"
MAX_UPLOAD_RECORDS = 1000
MAX_DELETE_IDENTITIES = 100
USER_AGENT = f"ctcli/{__version__}"

MAX_CONCURRENCY = 15  # CleverTap's concurrent-request ceiling per account
UNREADABLE_ANSWER = "unreadable answer from CleverTap"

# Statuses worth asking again: the server was busy, overloaded or briefly away. 501 and 505
# say the server will never handle this request, so asking again cannot help.
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(506, 600))
_RETRYABLE_TRANSPORT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
_RECORD_NUMBER = re.compile(r"record\s+number\s*:?\s*(\d+)", re.IGNORECASE)
_IDENTITY_KEYS = ("identity", "objectId", "FBID", "GPID", "guid")
# Bodies CleverTap may echo are not ours to trust with unbounded size in a one-line message.
_MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to talk to CleverTap; the passcode never shows in repr() or str()."""

    base_url: str
    project_id: str
    passcode: str = field(repr=False)
    timeout: float = 10.0  # seconds, per request
    max_retries: int = 5  # retries of one request after its first attempt
    concurrency: int = 4  # requests in flight at most, 1..15
    # Per batch, across all its attempts, waits and splits. None: two minutes, or longer when
    # timeout x attempts asks for it (so --max-retries is not silently cut short).
    max_total_seconds: float | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, not {self.max_retries}")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be more than 0 seconds, not {self.timeout}")


_OK = Outcome(ok=True)

# Answers about the body itself, given only once the credentials were accepted.
_BODY_REFUSALS = frozenset({400, 413, 415, 422})
# Answers that refuse a whole body, which halving may narrow down to the records at fault.
_SPLITTABLE_STATUSES = frozenset({400, 413})
# Markers of update operators that must not be applied twice (a retry after a lost answer).
_NON_IDEMPOTENT = (b'"$incr"', b'"$decr"')
# Failures after which the request surely never reached the server.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# One line per request at INFO (`ctcli -v`), refusals' answers at DEBUG (`-vv`). The passcode is
# in no message: requests are named by path, answers are scrubbed of it.
_http_log = logging.getLogger("ctcli.http")
# Each back-off (429, 5xx, network) at WARNING: a terminal shows it beside the progress line.
_backoff_log = logging.getLogger("ctcli.backoff")
_ANSWER_SHOWN = 500  # characters of a refusal's answer at DEBUG


class _Try(NamedTuple):
    """One request's fate: its answer, or why there was none and whether to try again."""

    response: httpx.Response | None
    failure: str
    retryable: bool
    unsent: bool  # the request surely never reached the server


@dataclass
class _Budget:
    """What one batch may still spend, across its retries and the halves of its splits."""

    requests: int
    deadline: float

    @classmethod
    def for_batch(cls, size: int, now: float, seconds: float) -> _Budget:
        # Enough to isolate a dozen bad records (each costs about 2 * log2(size) requests);
        # a body refused whatever it holds must not turn into 2 * size requests.
        return cls(requests=24 * max(1, math.ceil(math.log2(size + 1))) + 1, deadline=now + seconds)


class _Signal(Enum):
    SUCCESS = "success"
    THROTTLED = "throttled"
    OTHER = "other"


class _AdaptiveLimiter:
    """Gates requests: at most `limit` in flight; 429 halves the limit, successes win it back.

    The ceiling of 15 concurrent requests is shared by everything using the account, so a 429
    means someone else holds part of it right now: back off quickly, creep back slowly.
    """

    def __init__(self, ceiling: int, raise_after: int = 20) -> None:
        self._cond = threading.Condition()
        self._ceiling = ceiling
        self._raise_after = raise_after
        self._limit = ceiling
        self._in_flight = 0
        self._peak = 0
        self._streak = 0
        # Bumped on every decrease: a 429 for a request sent before the last decrease was
        # already answered by it, so a burst of 429s from one wave halves the limit once.
        self._generation = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def peak(self) -> int:
        return self._peak

    def acquire(self) -> int:
        with self._cond:
            while self._in_flight >= self._limit:
                self._cond.wait()
            self._in_flight += 1
            if self._in_flight > self._peak:
                self._peak = self._in_flight
            return self._generation

    def release(self, generation: int, signal: _Signal) -> None:
        with self._cond:
            self._in_flight -= 1
            if signal is _Signal.THROTTLED:
                self._streak = 0
                if generation == self._generation and self._limit > 1:
                    self._limit = max(1, self._limit // 2)
                    self._generation += 1
            elif signal is _Signal.SUCCESS:
                self._streak += 1
                if self._streak >= self._raise_after:
                    self._streak = 0
                    self._limit = min(self._ceiling, self._limit + 1)
            self._cond.notify_all()


class CleverTapClient:
    """Uploads and deletes CleverTap profiles; safe to share between threads.

    One pooled keep-alive HTTP/1.1 connection set per client; every request passes the adaptive
    limiter; retryable failures are retried with capped exponential backoff and full jitter.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
        stopping: Callable[[], bool] = lambda: False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`stopping` says when the run is being stopped: nothing is retried after that, and
        `sleep` should return early then. `env` holds the proxy variables (default: os.environ)."""
        self._settings = settings
        self._base = _normalise_base_url(settings.base_url)
        self._shown_base = redact_url(self._base)  # for messages: no user:password@
        self._upload_url = self._base + UPLOAD_PATH
        self._delete_url = self._base + DELETE_PATH
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._stopping = stopping
        self._limiter = _AdaptiveLimiter(settings.concurrency)
        self._lock = threading.Lock()
        self._requests = 0
        self._retries = 0
        self._answers = 0  # HTTP answers of any status: the server was reached
        self._rejection: str | None = None
        self._rejection_status: int | None = None
        limits = httpx.Limits(
            max_connections=settings.concurrency,
            max_keepalive_connections=settings.concurrency,
        )
        if transport is None:
            transport = make_transport(self._base, os.environ if env is None else env, limits)
        self._http = httpx.Client(
            headers=_request_headers(settings.project_id, settings.passcode),
            timeout=httpx.Timeout(settings.timeout),
            limits=limits,
            http1=True,
            http2=False,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # the transport has the proxy, checked; nothing else comes from env
        )

    def __repr__(self) -> str:
        return (
            f"CleverTapClient(base_url={self._shown_base!r}, "
            f"project_id={self._settings.project_id!r}, concurrency={self._settings.concurrency})"
        )

    def __enter__(self) -> CleverTapClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    @property
    def requests(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self._requests

    @property
    def retries(self) -> int:
        """Requests sent again after a retryable failure."""
        return self._retries

    @property
    def peak_in_flight(self) -> int:
        """The most requests that were ever in flight at once."""
        return self._limiter.peak

    @property
    def limit(self) -> int:
        """How many requests may be in flight right now (lowered by 429s)."""
        return self._limiter.limit

    @property
    def rejected(self) -> bool:
        """True once CleverTap refused the credentials; nothing more is sent after that."""
        return self._rejection is not None

    def upload(self, records: list[dict[str, Any] | bytes]) -> list[Outcome]:
        """Upload profile records in one request (split only to isolate a bad record).

        A record is a dict, or its JSON already encoded (bytes). Returns one Outcome per record,
        in order. Raises CredentialsRejected on 401/403.
        """
        self._refuse_if_rejected()
        if len(records) > MAX_UPLOAD_RECORDS:
            raise ValueError(
                f"CleverTap takes at most {MAX_UPLOAD_RECORDS} records per upload, "
                f"not {len(records)}"
            )
        return self._send(self._upload_url, "d", records, self._budget(len(records)))

    def delete(self, identities: list[str]) -> list[Outcome]:
        """Delete the profiles with these identities in one request.

        Returns one Outcome per identity, in order. Raises CredentialsRejected on 401/403.
        """
        self._refuse_if_rejected()
        if len(identities) > MAX_DELETE_IDENTITIES:
            raise ValueError(
                f"CleverTap deletes at most {MAX_DELETE_IDENTITIES} identities per request, "
                f"not {len(identities)}"
            )
        return self._send(self._delete_url, "identity", identities, self._budget(len(identities)))

    def _budget(self, size: int) -> _Budget:
        settings = self._settings
        seconds = settings.max_total_seconds
        if seconds is None:
            seconds = max(120.0, settings.timeout * (settings.max_retries + 1))
        return _Budget.for_batch(size, self._clock(), seconds)

    def _send(self, url: str, key: str, items: list[Any], budget: _Budget) -> list[Outcome]:
        if not items:
            return []
        try:
            if all(type(item) is bytes for item in items):  # encoded already: only joined
                body = b'{"' + key.encode() + b'":[' + b",".join(items) + b"]}"
            else:
                body = orjson.dumps({key: items}, default=_encoded)
        except orjson.JSONEncodeError:
            return self._send_encodable(url, key, items, budget)
        reply = self._exchange(url, body, budget, len(items))
        if isinstance(reply, Outcome):
            return [reply] * len(items)
        status = reply.status_code
        if 200 <= status < 300:
            passcode = self._settings.passcode
            return self._scrubbed(outcomes_from_answer(reply.content, items, passcode))
        error = _answer_error_text(reply.content, self._settings.passcode) or _status_text(status)
        if status in _SPLITTABLE_STATUSES and len(items) > 1:
            if budget.requests <= 0 or self._clock() >= budget.deadline:
                error = f"{error} (refused with its batch; too many refusals to isolate it)"
            else:
                return self._send_halves(url, key, items, budget)
        if 300 <= status < 400:
            error = f"{_status_text(status)} (redirects are not followed)"
        error = _scrub(error, self._settings.passcode)
        return [Outcome(ok=False, code=status, error=error)] * len(items)

    def _send_halves(self, url: str, key: str, items: list[Any], budget: _Budget) -> list[Outcome]:
        # One bad record makes CleverTap refuse the whole body: halve until it stands alone.
        middle = len(items) // 2
        first = self._send(url, key, items[:middle], budget)
        try:
            second = self._send(url, key, items[middle:], budget)
        except CredentialsRejected as exc:
            exc.settled = [*first, *exc.settled]  # the first half's answers still stand
            raise
        return first + second

    def _scrubbed(self, outcomes: list[Outcome]) -> list[Outcome]:
        # CleverTap's per-record texts reach result files; should one ever echo the passcode,
        # it stops here. Only failures carry text, so the all-ok path costs one scan.
        passcode = self._settings.passcode
        if all(outcome.ok or passcode not in (outcome.error or "") for outcome in outcomes):
            return outcomes
        return [
            Outcome(ok=False, code=outcome.code, error=_scrub(outcome.error or "", passcode))
            if not outcome.ok
            else outcome
            for outcome in outcomes
        ]

    def _send_encodable(
        self, url: str, key: str, items: list[Any], budget: _Budget
    ) -> list[Outcome]:
        """Fail the items JSON cannot carry, and send the rest."""
        outcomes: list[Outcome | None] = [None] * len(items)
        sendable: list[int] = []
        for index, item in enumerate(items):
            try:
                # Inside the same envelope: nesting depth counts against orjson's limit too.
                orjson.dumps({key: [item]}, default=_encoded)
            except orjson.JSONEncodeError as exc:
                outcomes[index] = Outcome(ok=False, error=f"cannot be sent as JSON: {exc}")
            else:
                sendable.append(index)
        try:
            sent = self._send(url, key, [items[index] for index in sendable], budget)
        except CredentialsRejected as exc:
            # Re-index what was settled (counted over the sendable items) over all the items.
            for index, outcome in zip(sendable, exc.settled, strict=False):
                outcomes[index] = outcome
            settled: list[Outcome] = []
            for known in outcomes:
                if known is None:
                    break  # the first record with no answer: everything after it is refused
                settled.append(known)
            exc.settled = settled
            raise
        for index, outcome in zip(sendable, sent, strict=True):
            outcomes[index] = outcome
        return [outcome or _OK for outcome in outcomes]

    def _exchange(
        self, url: str, body: bytes, budget: _Budget, count: int = 0
    ) -> httpx.Response | Outcome:
        """Send one body until it gets a final answer, or give up and say why."""
        settings = self._settings
        # A retry after a lost answer could apply $incr/$decr twice: such bodies are only sent
        # again when the first try surely never arrived, or was turned away unread (429).
        repeatable = not any(marker in body for marker in _NON_IDEMPOTENT)
        attempt = 0
        while True:
            budget.requests -= 1
            started = time.monotonic()
            response, failure, retryable, unsent = self._attempt(url, body)
            logging_requests = _http_log.isEnabledFor(logging.INFO)
            if logging_requests:
                self._log_request(url, count, response, failure, started)
            retry_after: float | None = None
            if response is not None:
                status = response.status_code
                if status not in _RETRYABLE_STATUSES:
                    return response
                code: int | None = status
                failure = _status_text(status)
                retry_after = _retry_after_seconds(response)
                retryable = repeatable or status == 429
            else:
                code = None
                retryable = retryable and (repeatable or unsent)
            tries = attempt + 1
            delay = self._backoff(attempt, retry_after)
            if (
                not retryable
                or attempt >= settings.max_retries
                or self._clock() + delay > budget.deadline
                or self._stopping()
            ):
                plural = "attempt" if tries == 1 else "attempts"
                if not repeatable and not retryable:
                    failure += " (it may have been applied: not retried, it has $incr/$decr)"
                elif retryable and self._stopping():
                    failure += " (not retried: ctcli was stopped)"
                    return Outcome(ok=False, code=code, error=f"{failure} after {tries} {plural}")
                if response is None and not self._answers:
                    # Not one answer yet in this run: the endpoint itself is out of reach
                    # (DNS, refused, every request timing out), so no later batch would fare
                    # better. The run stops sending instead of working through the input.
                    raise Unreachable(f"{failure} after {tries} {plural}")
                return Outcome(ok=False, code=code, error=f"{failure} after {tries} {plural}")
            with self._lock:
                self._retries += 1
            why = _scrub(
                failure if response is None else _status_text(response.status_code),
                settings.passcode,
            )
            if logging_requests:
                _http_log.info("retry %d/%d in %.1f s: %s", tries, settings.max_retries, delay, why)
            _backoff_log.warning("backing off %.1f s (retry %d/%d): %s", delay, tries,
                                 settings.max_retries, why)  # fmt: skip
            self._sleep(delay)
            if self._stopping():
                return Outcome(
                    ok=False,
                    code=code,
                    error=f"{failure} after {tries} attempts (not retried: ctcli was stopped)",
                )
            attempt += 1

    def _log_request(
        self,
        url: str,
        count: int,
        response: httpx.Response | None,
        failure: str,
        started: float,
    ) -> None:
        path = urllib.parse.urlsplit(url).path
        what = "identities" if path == DELETE_PATH else "records"
        milliseconds = (time.monotonic() - started) * 1000
        if response is None:
            outcome = _scrub(failure, self._settings.passcode)
        else:
            outcome = f"HTTP {response.status_code}"
        _http_log.info("POST %s %d %s: %s in %.0f ms", path, count, what, outcome, milliseconds)
        if (
            response is not None
            and not response.is_success
            and _http_log.isEnabledFor(logging.DEBUG)
        ):
            answer = _scrub(response.text[:_ANSWER_SHOWN], self._settings.passcode)
            _http_log.debug("answer to POST %s: %s", path, answer)

    def _attempt(self, url: str, body: bytes) -> _Try:
        """One request through the limiter: (answer, or why there was none, worth retrying)."""
        generation = self._limiter.acquire()
        signal = _Signal.OTHER
        try:
            self._refuse_if_rejected()  # refused while this one waited for a slot: send nothing
            with self._lock:
                self._requests += 1
            try:
                with request_deadline(self._settings.timeout):
                    response = self._http.post(url, content=body)
            except httpx.TransportError as exc:
                reason = (
                    f"cannot reach {self._shown_base}: "
                    f"{_transport_reason(exc, self._settings.timeout, self._settings.passcode)}"
                )
                retryable = isinstance(exc, _RETRYABLE_TRANSPORT_ERRORS)
                unsent = isinstance(exc, _NOT_SENT_ERRORS)
                return _Try(None, _scrub(reason, self._settings.passcode), retryable, unsent)
            except httpx.DecodingError:
                return _Try(None, UNREADABLE_ANSWER, False, False)
            with self._lock:
                self._answers += 1
            if response.status_code in (401, 403):
                self._reject(response)  # before the slot is freed: waiting requests see it
            if response.status_code == 429:
                signal = _Signal.THROTTLED
            elif response.is_success:
                signal = _Signal.SUCCESS
            return _Try(response, "", True, False)
        finally:
            self._limiter.release(generation, signal)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        settings = self._settings
        # min() on the exponent keeps 2**attempt a small float whatever max_retries says.
        ceiling = min(settings.backoff_cap, settings.backoff_base * 2.0 ** min(attempt, 64))
        delay = self._random() * ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, settings.retry_after_cap))
        return delay

    def _reject(self, response: httpx.Response) -> NoReturn:
        message = _rejection_message(self._settings.project_id, response, self._settings.passcode)
        with self._lock:
            if self._rejection is None:
                self._rejection = message
                self._rejection_status = response.status_code
        raise CredentialsRejected(message, status_code=response.status_code)

    def _refuse_if_rejected(self) -> None:
        if self._rejection is not None:
            raise CredentialsRejected(self._rejection, status_code=self._rejection_status)


def outcomes_from_answer(content: bytes, items: list[Any], passcode: str = "") -> list[Outcome]:
    """Read a 2xx answer into one Outcome per item sent (records, or identities for deletes).

    Nothing is assumed delivered unless the answer says so: an answer that cannot be read, or a
    failure that cannot be pinned to a record, fails every record it might concern.
    """
    count = len(items)
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        return [Outcome(ok=False, error=UNREADABLE_ANSWER)] * count
    status = payload.get("status")
    unprocessed = payload.get("unprocessed")
    if isinstance(unprocessed, list) and unprocessed:
        return _map_unprocessed(unprocessed, items, passcode)
    if status == "success":
        processed = _int_or_none(payload.get("processed"))
        if processed is not None and processed < count:
            # "success", yet fewer records processed than sent, and none named as refused:
            # nothing says which ones landed, so none is counted as delivered.
            error = (
                f"CleverTap answered success but processed {processed} of {count} records"
                " without saying which"
            )
            return [Outcome(ok=False, error=error)] * count
        return [_OK] * count
    if status in ("fail", "partial"):
        error = _answer_error_text(content, passcode) or (
            "CleverTap refused the batch"
            if status == "fail"
            else "CleverTap refused some records without saying which"
        )
        return [Outcome(ok=False, code=_int_or_none(payload.get("code")), error=error)] * count
    return [Outcome(ok=False, error=UNREADABLE_ANSWER)] * count


def _map_unprocessed(unprocessed: list[Any], items: list[Any], passcode: str) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(items)
    unplaced: list[Outcome] = []
    for entry in unprocessed:
        if not isinstance(entry, dict):
            unplaced.append(Outcome(ok=False, error=UNREADABLE_ANSWER))
            continue
        error = entry.get("error")
        failure = Outcome(
            ok=False,
            code=_int_or_none(entry.get("code")),
            error=_clip(error, passcode) if isinstance(error, str) and error else "refused",
        )
        index = _record_number_index(error, len(items))
        if index is None:
            index = _echo_index(entry.get("record"), items, outcomes)
        if index is None:
            unplaced.append(failure)
        else:
            outcomes[index] = failure
    if unplaced:
        # Some refusal names no record we can find: any record not already failed may be it.
        first = unplaced[0]
        fallback = Outcome(
            ok=False,
            code=first.code,
            error=f"CleverTap refused a record it did not identify: {first.error}",
        )
        return [outcome or fallback for outcome in outcomes]
    return [outcome or _OK for outcome in outcomes]


def _record_number_index(error: object, count: int) -> int | None:
    """The 0-based index from "... Skipped record number : N" (N is 1-based), if in range."""
    if not isinstance(error, str):
        return None
    match = _RECORD_NUMBER.search(error)
    if match is None:
        return None
    number = int(match.group(1))
    return number - 1 if 1 <= number <= count else None


def _echo_index(echo: object, items: list[Any], outcomes: list[Outcome | None]) -> int | None:
    """Find the item CleverTap echoed back: an equal item first, else one with its identity."""
    if echo is None:
        return None
    candidates = [
        index
        for index, item in enumerate(items)
        if (orjson.loads(item) if type(item) is bytes else item) == echo
    ]
    if not candidates:
        identity = _identity_of(echo)
        if identity is None:
            return None
        candidates = [index for index, item in enumerate(items) if _identity_of(item) == identity]
    for index in candidates:
        if outcomes[index] is None:
            return index
    return candidates[0] if candidates else None


def _encoded(value: object) -> orjson.Fragment:
    """Records may come JSON-encoded already (bytes): they go into the body as they are."""
    if type(value) is bytes:
        return orjson.Fragment(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _identity_of(item: object) -> str | None:
    if type(item) is bytes:
        item = orjson.loads(item)
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in _IDENTITY_KEYS:
            value = item.get(key)
            if value is not None and not isinstance(value, dict | list):
                return str(value)
    return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (Retry-After as seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = _http_date(value)
        if when is None:
            return None
        # Measured against the server's own Date header when it sends one, so a skewed local
        # clock does not stretch or shrink the wait.
        reference = _http_date(response.headers.get("Date", "")) or datetime.now(UTC)
        seconds = (when - reference).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _http_date(value: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def check_credentials(
    base_url: str,
    project_id: str,
    passcode: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Ask CleverTap once whether it accepts these credentials.

    Returns when it does (a 2xx, or a refusal of the body itself: 400, 413, 415, 422; the
    credentials got past authentication and only the empty upload was refused). Raises
    CredentialsRejected on 401/403 and Unreachable on a network error, a timeout, a redirect,
    any other 4xx (a wrong endpoint path, a busy account) or a 5xx.
    """
    base = _normalise_base_url(base_url)
    headers = _request_headers(project_id, passcode)
    try:
        if transport is None:
            limits = httpx.Limits(max_connections=1)
            transport = make_transport(base, os.environ if env is None else env, limits)
        with (
            httpx.Client(
                transport=transport,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                http1=True,
                http2=False,
                trust_env=False,
            ) as http,
            request_deadline(timeout),
        ):
            response = http.post(
                base + UPLOAD_PATH, content=orjson.dumps({"d": []}), headers=headers
            )
    except httpx.RequestError as exc:
        reason = _transport_reason(exc, timeout, passcode)
        raise Unreachable(f"cannot reach {redact_url(base)}: {reason}") from None
    status = response.status_code
    if status in (401, 403):
        raise CredentialsRejected(_rejection_message(project_id, response, passcode))
    if 200 <= status < 300 or status in _BODY_REFUSALS:
        return  # past authentication: at most the empty upload itself was refused
    # 404, 405, 408, 429, 5xx...: a wrong endpoint path or a busy server, not an answer about
    # the credentials.
    raise Unreachable(f"cannot ask {redact_url(base)}: it answered {_status_text(status)}")


def _normalise_base_url(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    problem = None
    try:
        url = httpx.URL(base)
        if url.scheme not in ("http", "https") or not url.host:
            problem = "is not an http(s) URL"
        elif not is_host_name(urllib.parse.urlsplit(base).hostname or ""):
            problem = "does not name a valid host"
        elif url.port is not None and not 0 < url.port < 65536:
            problem = f"has a port out of range ({url.port})"
        elif any(character.isspace() for character in base):
            problem = "has a space in it"
    except (httpx.InvalidURL, ValueError) as exc:
        problem = f"is not a valid URL ({exc})"
    if problem is not None:
        raise ConfigError(f"the CleverTap endpoint {redact_url(base_url)!r} {problem}")
    return base


def _request_headers(project_id: str, passcode: str) -> dict[str, str]:
    # A non-ASCII or control character would make httpx fail deep inside with the header
    # value at hand; refuse early, with a message that does not quote the passcode.
    for name, value in (("project id", project_id), ("passcode", passcode)):
        if not value or not value.isascii() or not value.isprintable():
            raise ConfigError(
                f"the CleverTap {name} is empty or holds characters an HTTP header cannot carry"
            )
    return {
        "X-CleverTap-Account-Id": project_id,
        "X-CleverTap-Passcode": passcode,
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


def _status_text(status: int) -> str:
    phrase = httpx.codes.get_reason_phrase(status)
    return f"HTTP {status} {phrase}" if phrase else f"HTTP {status}"


def _answer_error_text(content: bytes, passcode: str) -> str | None:
    """CleverTap's "error" text from a JSON answer body, if it has one."""
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, str) and error.strip():
            return _clip(error.strip(), passcode)
    return None


def _rejection_message(project_id: str, response: httpx.Response, passcode: str) -> str:
    status = response.status_code
    detail = _answer_error_text(response.content, passcode) or httpx.codes.get_reason_phrase(status)
    detail = _scrub(detail, passcode)
    suffix = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    return f"CleverTap refused the credentials for project {project_id} ({suffix})"


def _transport_reason(exc: httpx.RequestError, timeout: float, passcode: str) -> str:
    """Say in a few words why a request got no answer (never quoting the request itself)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout:g} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.WriteTimeout):
        return f"could not send the request within {timeout:g} s"
    if isinstance(exc, httpx.PoolTimeout):
        return f"no free connection within {timeout:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server dropped the connection"
    detail = str(exc).lower()
    if isinstance(exc, httpx.ConnectError):
        if "refused" in detail:
            return "connection refused"
        if any(
            hint in detail
            for hint in ("name or service not known", "nodename", "getaddrinfo", "name resolution")
        ):
            return "host name not found"
        if "unreachable" in detail:
            return "network unreachable"
        if "certificate" in detail or "ssl" in detail:
            return f"TLS handshake failed ({_clip(str(exc), passcode)})"
        return f"connection failed ({_clip(str(exc), passcode) or type(exc).__name__})"
    if isinstance(exc, httpx.NetworkError):
        return f"connection broken ({_clip(str(exc), passcode) or type(exc).__name__})"
    return f"{type(exc).__name__}: {_clip(str(exc), passcode)}"


def _clip(text: str, passcode: str) -> str:
    """Text from a server or the OS, fit for a one-line message: scrubbed first, then cut, so
    a passcode straddling the cut cannot leave its first characters behind."""
    return _scrub(text, passcode)[:_MAX_REASON_CHARS]


def _scrub(text: str, passcode: str) -> str:
    # Belt and braces: a message built from server or OS text must never echo the passcode.
    return text.replace(passcode, "***") if passcode else text
