"""Fault injection: the settings `Sandbox.set_faults` takes and what they do to each request.

The injector numbers (from 1) the API requests the sandbox admits; a request's number and the
settings in force when it was admitted settle, once, whether it is held, how long it is delayed,
and whether it is dropped, failed, refused as a bad batch or answered a byte at a time. The hold
gate is where held requests wait until released.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson

from ctcli.sandbox.rules import (
    INVALID_CREDENTIALS,
    MALFORMED_REQUEST,
    TOO_MANY_REQUESTS,
    Answer,
    fail_document,
    identity_of,
    is_number,
)

# A failure of one of these statuses reads like CleverTap's own.
_DEFAULT_ERRORS = {
    400: MALFORMED_REQUEST,
    401: INVALID_CREDENTIALS,
    429: TOO_MANY_REQUESTS,
}


@dataclass(frozen=True, slots=True)
class Faults:
    """One set of fault settings, as `Sandbox.set_faults` documents them; ValueError if invalid."""

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
        if not is_number(self.latency) or self.latency < 0:
            raise ValueError(f"latency must be a number >= 0, not {self.latency!r}")
        if not is_number(self.jitter) or self.jitter < 0:
            raise ValueError(f"jitter must be a number >= 0, not {self.jitter!r}")
        if not is_number(self.drip) or self.drip < 0:
            raise ValueError(f"drip must be a number >= 0, not {self.drip!r}")
        if self.retry_after is not None and (
            not is_number(self.retry_after) or self.retry_after < 0
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

    def failure(self) -> Answer:
        """The answer to a request `fail_every` fails."""
        status = self.fail_status
        if self.fail_body is not None:
            body = orjson.dumps(self.fail_body)
        else:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Injected failure"
            body = fail_document(status, _DEFAULT_ERRORS.get(status, phrase))
        headers: tuple[tuple[str, str], ...] = ()
        if self.retry_after is not None:
            headers = (("Retry-After", f"{self.retry_after:g}"),)
        return status, body, headers

    def refuses_batch(self, records: list[Any]) -> bool:
        """Whether `bad_batch_marker` refuses an upload of these records as a whole."""
        marker = self.bad_batch_marker
        if marker is None:
            return False
        for record in records:
            if type(record) is dict:
                identity = identity_of(record)
                if identity is not None and identity.startswith(marker):
                    return True
        return False


@dataclass(frozen=True, slots=True)
class RequestFaults:
    """The faults one admitted request meets: its number, the settings then, its share of jitter."""

    settings: Faults
    sequence: int
    jitter: float

    @property
    def held(self) -> bool:
        return self.settings.hold or self.sequence == self.settings.stall_request

    @property
    def dropped(self) -> bool:
        every = self.settings.drop_every
        return bool(every) and self.sequence % every == 0

    @property
    def failed(self) -> bool:
        every = self.settings.fail_every
        return bool(every) and self.sequence % every == 0


class FaultInjector:
    """The fault settings in force and the counter that numbers the requests they meet.

    Not locked itself: the Sandbox calls it under its one lock.
    """

    def __init__(self) -> None:
        self.settings = Faults()
        self._sequence = 0
        self._random = random.Random()

    def replace(self, settings: Faults) -> None:
        """Put `settings` in force and number requests from 1 again."""
        self.settings = settings
        self._sequence = 0

    def admit(self) -> RequestFaults:
        """Number the next request and settle the faults it meets."""
        self._sequence += 1
        settings = self.settings
        jitter = self._random.random() * settings.jitter if settings.jitter else 0.0
        return RequestFaults(settings, self._sequence, jitter)


class HoldGate:
    """Where held requests wait, in flight, until a release lets every one of them go.

    It waits on the lock it is given, the Sandbox's one lock: `hold` and `release` are called
    with it held, `wait_held` takes it.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._condition = threading.Condition(lock)
        self.held = 0  # requests waiting in the current hold round
        self._round = 0

    def hold(self) -> None:
        """Wait until the next release; wait() gives the lock up meanwhile."""
        self.held += 1
        self._condition.notify_all()  # wake wait_held()
        round_ = self._round
        while self._round == round_:
            self._condition.wait()

    def release(self) -> int:
        """Let every held request go; returns how many."""
        # A released request leaves the count at once, so a following wait_held() counts only
        # requests held after this release.
        released = self.held
        self.held = 0
        self._round += 1
        self._condition.notify_all()
        return released

    def wait_held(self, count: int, timeout: float | None = None) -> bool:
        """Wait until at least `count` requests are held; False if `timeout` seconds pass first."""
        with self._condition:
            return self._condition.wait_for(lambda: self.held >= count, timeout)
