"""--state checkpoints: how far each input file is settled, so a re-run sends only what is new.

A file's checkpoint only ever moves to the end of a contiguous run of settled events
(ok, invalid, skipped, or failed and written to the --failed file), so a killed run re-sends
at most what was in flight. The state file is replaced atomically; a sidecar lock file stops
two runs from sharing it. Neither is reached through a final symlink (a planted one would
redirect the writes), and both are found through the resolved directory, so two spellings of
one path share one lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ctcli.errors import ConfigError, InputError, StateLocked
from ctcli.models import InputItem, Result, Status

HEAD_BYTES = 4096  # how much of a file's beginning identifies it across runs
STATE_VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Resume:
    """Where to pick a file up: at byte `offset` after line `line` when it is NDJSON, else after
    its first `line` items (a JSON document, or the first batch envelope line of NDJSON)."""

    line: int
    offset: int | None


def _head_hash(path: str, length: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(length)).hexdigest()


def _ends_line(path: str, offset: int) -> bool:
    """Whether the byte just before `offset` of the plain file `path` ends a line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset - 1)
            return handle.read(1) == b"\n"
    except (OSError, ValueError):
        return False


def _offset(value: Any) -> int | None:
    """A byte offset or line count from a state file: an int >= 0, or None."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ValueError(f"bad offset {value!r}")
    return value


def _resolve_directory(path: Path) -> Path:
    """`path` with its directory resolved (symlinks, '..', relative) and its name kept: every
    spelling of one state file gives one path, and a symlink at the name itself stays visible."""
    return Path(os.path.realpath(path.parent)) / path.name


def hold_lock(fd: int, shown: Path, what: str) -> None:
    """Take the flock of an open lock file and write our pid in it, or close it and fail at
    once (StateLocked) naming the pid of the run that holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").partition("\n")[0].strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"cannot lock '{shown}': {exc.strerror}") from None
        raise StateLocked(
            f"{what} is in use by another ctcli run (pid {holder or 'unknown'}); "
            "wait for it to finish"
        ) from None
    # Write the pid over the old one, then cut what is left: a reader sees a whole line.
    pid = f"{os.getpid()}\n".encode()
    os.pwrite(fd, pid, 0)
    os.ftruncate(fd, len(pid))


def require_directory(directory: Path, shown: Path, what: str = "state file") -> None:
    """The directory a file of ours goes in exists and is one; else one line naming `what`."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(f"{what} '{shown}': directory '{shown.parent}' does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} '{shown}': cannot use its directory: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} '{shown}': '{shown.parent}' is not a directory")


def _require_writable_directory(directory: Path, shown: Path) -> None:
    # Tried for real, as save() will do it: permission bits say nothing for root, and nothing
    # about read-only mounts or immutable directories.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{shown.name}.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"state file '{shown}': cannot write in directory '{shown.parent}': {exc.strerror}"
        ) from None


def require_regular_or_absent(
    path: Path, what: str, shown: Path, *, directory_hint: str | None = None
) -> None:
    """Refuse, without opening it, anything at `path` but a regular file (a symlink too).

    `directory_hint`: what to say when a directory stands there (else: not a regular file).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"cannot use {what} '{shown}': {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise _symlink_refused(what, shown)
    if directory_hint is not None and stat.S_ISDIR(info.st_mode):
        raise ConfigError(directory_hint)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} '{shown}' is not a regular file; move it away")


def _open_nofollow(path: Path, flags: int, what: str, shown: Path) -> int:
    """Open `path` without following a final symlink and without blocking on a FIFO; raise
    ConfigError unless what was opened is a regular file."""
    require_regular_or_absent(path, what, shown)
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    # Checked on what was opened: the path may have been swapped since the lstat.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{what} '{shown}' is not a regular file; move it away")
    return fd


def _require_single_link(fd: int, shown: Path) -> None:
    # The lock file is truncated: a hard link planted there would have its other name cut too.
    if os.fstat(fd).st_nlink > 1:
        os.close(fd)
        raise ConfigError(f"lock file '{shown}' has other hard links; remove it")


def _symlink_refused(what: str, shown: Path) -> ConfigError:
    # Followed, a symlink planted there would get its target truncated or replaced, and would
    # give one state file a second lock that does not exclude the first.
    return ConfigError(
        f"{what} '{shown}' is a symlink, which ctcli does not follow: remove it"
        + (", or name the file it points to" if what == "state file" else "")
    )


def _symlink_error(exc: OSError, what: str, shown: Path) -> ConfigError | None:
    # O_NOFOLLOW fails with ELOOP on a symlink planted after the lstat.
    return _symlink_refused(what, shown) if exc.errno == errno.ELOOP else None


class StateFile:
    """Checkpoints of the input files of a run, loaded at start and saved as events settle."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)  # as given, for messages
        self._real = _resolve_directory(self.path)  # for every access: lock, load, save
        self._lock_fd: int | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._blocked: set[str] = set()
        self._current: dict[str, dict[str, Any]] = {}  # identity of each file as read this run
        self._compressed: set[str] = set()  # files read through gzip: offsets are not file bytes
        self._dirty = False

    @property
    def _lock_path(self) -> Path:
        return self._real.with_name(self._real.name + ".lock")

    def check(self) -> None:
        """Raise ConfigError now, before anything is sent, if the checkpoint could not be read
        or saved later: its directory must exist and be writable, and the state file, if there
        is one, must be a regular file (not a symlink) that can be read."""
        require_directory(self._real.parent, self.path)
        _require_writable_directory(self._real.parent, self.path)
        fd = self._open_state()
        if fd is not None:
            os.close(fd)

    # -- lock ----------------------------------------------------------------------------

    def lock(self) -> None:
        """Check the state file (see `check`), then take the sidecar lock, or fail at once
        naming the run that holds it."""
        self.check()
        shown = self.path.with_name(self.path.name + ".lock")
        try:
            fd = _open_nofollow(self._lock_path, os.O_RDWR | os.O_CREAT, "lock file", shown)
        except OSError as exc:
            error = _symlink_error(exc, "lock file", shown)
            raise error or ConfigError(f"cannot open lock file '{shown}': {exc.strerror}") from None
        _require_single_link(fd, shown)
        hold_lock(fd, shown, f"state file '{self.path}'")
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- load / save ---------------------------------------------------------------------

    def _open_state(self) -> int | None:
        """A read-only descriptor of the state file, None when there is none yet."""
        try:
            return _open_nofollow(self._real, os.O_RDONLY, "state file", self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            error = _symlink_error(exc, "state file", self.path)
            raise error or ConfigError(
                f"state file '{self.path}' is unreadable ({exc.strerror}); "
                "move it away to start over"
            ) from None

    def load(self) -> None:
        fd = self._open_state()
        if fd is None:
            return
        try:
            with os.fdopen(fd, "rb") as handle:
                data = orjson.loads(handle.read())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(
                f"state file '{self.path}' is unreadable ({exc}); move it away to start over"
            ) from None
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            raise ConfigError(f"state file '{self.path}' is not a ctcli state file")
        self._entries = {str(key): value for key, value in files.items() if isinstance(value, dict)}

    def save(self, *, sync: bool = True) -> None:
        """Write atomically; a run that settled nothing leaves the old checkpoint alone.

        Without sync the new checkpoint survives the process being killed, not the machine
        losing power (then an older one is found, and a little is sent again).
        """
        if not self._dirty:
            return
        document = {"version": STATE_VERSION, "files": self._entries}
        fd, temp = tempfile.mkstemp(prefix=f".{self._real.name}.", dir=self._real.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
            os.replace(temp, self._real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._dirty = False

    # -- per file ------------------------------------------------------------------------

    @staticmethod
    def key(name: str) -> str:
        return os.path.realpath(name)

    def resume_point(self, name: str) -> tuple[Resume | None, str | None]:
        """Where to start reading `name`, and a message when the checkpoint is discarded."""
        entry = self._entries.get(self.key(name))
        if not entry:
            return None, None
        try:
            stat = os.stat(name)
            head_len = int(entry.get("head_length", min(int(entry["size"]), HEAD_BYTES)))
            head = _head_hash(name, head_len)
        except OSError as exc:
            # Not a reason to throw the checkpoint away: the file may be back next run.
            raise InputError(f"cannot read '{name}': {exc.strerror}") from None
        except (KeyError, TypeError, ValueError):
            head = None
        try:
            same_file = (stat.st_dev, stat.st_ino) == (entry["device"], entry["inode"])
            grown = stat.st_size >= int(entry["size"])
            resume = Resume(_offset(entry["line"]) or 0, _offset(entry.get("offset")))
        except (KeyError, TypeError, ValueError):
            same_file = grown = False
        if not (head is not None and head == entry.get("head_sha256") and same_file and grown):
            del self._entries[self.key(name)]
            self._dirty = True
            return None, (
                f"{name} was replaced or truncated since the last run: starting from the beginning"
            )
        return resume, None

    def begin_file(self, name: str) -> None:
        """Remember the identity of `name` as it is now, before reading it."""
        stat = os.stat(name)
        head_length = min(stat.st_size, HEAD_BYTES)
        with open(name, "rb") as handle:
            head = handle.read(head_length)
        self._current[self.key(name)] = {
            "device": stat.st_dev,
            "inode": stat.st_ino,
            "size": stat.st_size,
            "head_length": len(head),
            "head_sha256": hashlib.sha256(head).hexdigest(),
        }
        if head.startswith(_GZIP_MAGIC):
            self._compressed.add(self.key(name))
        else:
            self._compressed.discard(self.key(name))

    def settle(
        self, item: InputItem, results: Sequence[Result], *, failed_written: bool
    ) -> str | None:
        """Move the file's checkpoint past `item` if it, and all before it, are settled.

        Returns a message when the checkpoint stops at a line that may still be being written
        (the last line of a plain file, not valid JSON and with no newline yet): it is reported
        invalid now, and read again, complete, by the next run.
        """
        key = self.key(item.source)
        identity = self._current.get(key)
        if identity is None or key in self._blocked:
            return None
        if not all(is_settled(result, failed_written) for result in results):
            self._blocked.add(key)  # the checkpoint must never pass an unsettled event
            return None
        offset = item.end_offset
        previous = self._entries.get(key)
        if offset is None and previous is not None and previous.get("offset") is not None:
            # Inside a batch envelope line of NDJSON: only its last item ends the line, so the
            # checkpoint waits there (counting items from the top would mix two numberings).
            return None
        size = identity["size"]
        if offset is not None and key not in self._compressed:
            if item.error is not None and not _ends_line(item.source, offset):
                self._blocked.add(key)
                return (
                    f"{item.source}: line {item.line} has no newline yet (still being "
                    "written?): the next run reads it again"
                )
            size = max(size, offset)  # the file grew while it was read
        # Resuming at an offset numbers lines from the file's own line there; without one, the
        # line is a count of the items to skip.
        line = item.file_line if offset is not None and item.file_line else item.line
        self._entries[key] = {**identity, "size": size, "line": line, "offset": offset}
        self._dirty = True
        return None


def is_settled(result: Result, failed_written: bool) -> bool:
    status = result.status
    if (
        status is Status.OK
        or status is Status.INVALID
        or status is Status.SKIPPED
        or status is Status.SUPERSEDED
        or status is Status.UNCHANGED
    ):
        return True
    if status is Status.FAILED:
        return failed_written
    return False  # dry-run: nothing was sent
