"""The --failed file: one NDJSON line per failed or invalid event, re-drivable as input."""

from __future__ import annotations

import base64
import errno
import json
import os
from pathlib import Path
from typing import BinaryIO

import orjson

from ctcli.errors import InputError
from ctcli.events.sources import FAILED_LINE_MARK, objects_with
from ctcli.events.supersession import marker_line
from ctcli.models import InputItem, Result


class FailedFile:
    """Appends dead letters; each line carries the original event so replay can re-drive it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            # 0600 from birth: it holds whole events (emails, phone numbers).
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._file: BinaryIO = os.fdopen(fd, "ab")
        except OSError as exc:
            raise InputError(f"cannot open failed file '{path}': {exc.strerror}") from None
        self.written = 0
        self._synced = 0  # lines known to be on disk
        # Identities with a failure in the file, from earlier runs too: a later delivery of
        # one of them writes a marker, so that re-driving the failure cannot undo it.
        self.failed_identities: set[str] = _failed_identities(self.path)

    def write(self, item: InputItem, result: Result) -> None:
        line: dict[str, object] = {"ctcli": FAILED_LINE_MARK}
        if item.event is not None:
            line["event"] = item.event
        elif item.event_json is not None:
            line["event"] = orjson.Fragment(item.event_json)
        elif item.raw is not None and not _is_utf8(item.raw):
            # Bytes that are not UTF-8: kept exactly, so a re-drive refuses them again.
            line["event"] = None
            line["raw_base64"] = base64.b64encode(
                item.raw.encode("utf-8", "surrogateescape")
            ).decode("ascii")
        else:
            line["event"] = item.raw
        line.update({
            "source": result.source,
            "line": result.line,
            "action": result.action,
            "identity": result.identity,
            "status": str(result.status),
            "code": result.code,
            "error": result.error,
        })  # fmt: skip
        self._append(line)
        if result.identity is not None:
            self.failed_identities.add(result.identity)

    def supersede(self, result: Result) -> None:
        """Say that delivered `result` supersedes the failures of its identity written so far."""
        identity = result.identity
        if identity is None or identity not in self.failed_identities:
            return
        keys = None if result.action == "delete" else result.supersedes
        self._append(marker_line(identity, result.source, result.line, result.action or "", keys))

    def _append(self, line: dict[str, object]) -> None:
        try:
            data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # integers beyond 64 bits, which the stdlib codec keeps exact
            data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._cannot_write(exc) from None
        self.written += 1

    @property
    def unsynced(self) -> bool:
        """Lines written since the last fsync: a durable checkpoint must wait for them."""
        return self._synced < self.written

    def flush(self, *, sync: bool = True) -> None:
        """Hand the lines to the OS (a killed process loses nothing); with sync, to the disk."""
        try:
            self._file.flush()
            if sync and self.unsynced:
                os.fsync(self._file.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EROFS):
                raise self._cannot_write(exc) from None
            # a pipe or a device (--failed /dev/stderr): written, just not syncable
        if sync:
            self._synced = self.written

    def _cannot_write(self, exc: OSError) -> InputError:
        # Exit 2, and the checkpoint stays where it was: these events are not safe anywhere.
        return InputError(f"cannot write failed file '{self.path}': {exc.strerror or exc}")

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _failed_identities(path: Path) -> set[str]:
    """The identities of the failed lines already in the file (none if it is not a file)."""
    identities: set[str] = set()
    try:
        if not path.is_file():
            return identities
        with open(path, "rb") as existing:
            for _line, value in objects_with(existing, b'"identity"'):
                identity = value.get("identity")
                if isinstance(identity, str) and "event" in value:
                    identities.add(identity)
    except OSError:
        pass  # opening it for appending said what there is to say
    return identities
