"""What CleverTap last accepted, per identity, so a nightly full snapshot sends only changes.

Each identity has one row holding, per attribute, its name and an 8-byte fingerprint of the
value CleverTap accepted; never the value itself, so the file holds no personal data beyond
the identities. A run compares a record's fingerprints with these to drop what is unchanged,
and marks the identities it read, so that those it did not read can be deleted afterwards.

Layout (SQLite, WAL journal, file mode 0600):

    fingerprints(identity TEXT PRIMARY KEY, attrs BLOB, seen INTEGER) WITHOUT ROWID
    runs(number INTEGER PRIMARY KEY, started_at TEXT, finished_at TEXT, complete INTEGER)

`attrs` is packed (see `_pack`): a version byte, then per attribute, sorted by name, a varint
length, the UTF-8 name and the 8 fingerprint bytes. One row with its packing costs about
identity + 2 + sum(name + 9) bytes, plus SQLite's few bytes of cell overhead.

Every method is one transaction (a killed process leaves the last committed state: WAL makes
that so without fsync on every commit; a power loss may lose the last commits, which only
makes the next run send those records again). Every method takes its identities in bulk and
touches the database with `executemany` or `IN (...)` chunks, never a round trip per row.

A sidecar `PATH.lock`, held with flock while the database is open, keeps a second run out
(the kernel releases it when the holder dies, however it dies). Neither file is reached
through a final symlink, and both are found through the resolved directory, so two spellings
of one path share one lock.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from ctcli.delivery.checkpoints import hold_lock, require_directory, require_regular_or_absent
from ctcli.errors import ConfigError

FINGERPRINT_BYTES = 8
PACK_VERSION = 1  # the first byte of every `attrs` blob
SCHEMA_VERSION = 1  # PRAGMA user_version
APPLICATION_ID = 0x63746366  # "ctcf": PRAGMA application_id, tells our file from other SQLite
CHUNK = 500  # at most this many parameters in one `IN (...)`
OPERATORS = frozenset({"$add", "$remove", "$incr", "$decr", "$delete"})

_EMPTY = bytes([PACK_VERSION])
_WHAT = "fingerprint database"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    identity TEXT PRIMARY KEY,
    attrs BLOB NOT NULL,
    seen INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    number INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    complete INTEGER
);
"""


def fingerprint(value: Any) -> bytes:
    """8 bytes that change when the value does: blake2b of its canonical JSON (sorted keys).

    8 bytes keep the database small; a collision (about 1 in 2**64 per changed value) would
    only skip sending one changed attribute. orjson is fast; it refuses integers beyond 64
    bits, which the standard library encodes instead (the same value always takes the same
    road, so its fingerprint is stable).
    """
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot fingerprint {type(value).__name__}: {exc}") from None
        encoded = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(encoded, digest_size=FINGERPRINT_BYTES).digest()


def is_operator(value: Any) -> bool:
    """Whether `value` is an update operator ({"$incr": 1}...): CleverTap computes the new
    value, so what it holds afterwards is not known here."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in OPERATORS


# -- packing -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _name_prefix(name: str) -> bytes:
    """varint(len) + UTF-8 name: attribute names repeat on every row, so encode each once."""
    raw = name.encode("utf-8", "surrogatepass")
    out = bytearray()
    length = len(raw)
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + raw


@functools.lru_cache(maxsize=4096)
def _name_of(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


def _pack(attrs: Mapping[str, bytes]) -> bytes:
    """Version byte, then per attribute (sorted: one content, one blob) varint(len(name)),
    UTF-8 name, 8-byte fingerprint."""
    parts = [_EMPTY]
    for name in sorted(attrs):
        parts.append(_name_prefix(name))
        parts.append(attrs[name])
    return b"".join(parts)


# A row also keeps the fingerprint of the whole record last accepted, under a name no
# attribute has (it sorts first): most rows of a nightly snapshot are unchanged, and one hash
# of the record then says so without a hash per attribute.
WHOLE = "\x00record"


def whole_fingerprint(data: Mapping[str, Any]) -> bytes | None:
    """The fingerprint of a record's profileData as a whole; None when it holds an update
    operator (what CleverTap makes of it is not known here)."""
    if any(is_operator(value) for value in data.values()):
        return None
    return fingerprint(data)


def holds_whole(blob: bytes, whole: bytes | None) -> bool:
    """Whether a stored row's last accepted record had exactly this whole fingerprint."""
    return (
        whole is not None
        and len(whole) == FINGERPRINT_BYTES
        and blob.startswith(_WHOLE_PREFIX + whole)
    )


def unpack(blob: bytes) -> dict[str, bytes]:
    """attribute -> fingerprint of a stored blob (see `known_packed`)."""
    return _unpack(blob)


_WHOLE_PREFIX = _EMPTY + _name_prefix(WHOLE)


def _unpack(blob: bytes) -> dict[str, bytes]:
    if not blob or blob[0] != PACK_VERSION:
        raise ValueError(f"unknown packing version {blob[:1].hex() or 'none'}")
    attrs: dict[str, bytes] = {}
    position, end = 1, len(blob)
    while position < end:
        length = blob[position]
        position += 1
        if length >= 0x80:  # a name of 128 bytes or more: more varint bytes
            length &= 0x7F
            shift = 7
            while True:
                byte = blob[position]
                position += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
        name_end = position + length
        fingerprint_end = name_end + FINGERPRINT_BYTES
        if fingerprint_end > end:
            raise ValueError("truncated attribute")
        attrs[_name_of(blob[position:name_end])] = blob[name_end:fingerprint_end]
        position = fingerprint_end
    return attrs


# -- files ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _unique(identities: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(identities))


def _refuse_symlink(path: Path, shown: Path) -> None:
    """Refuse anything at `path` but a regular file (or nothing), without opening it."""
    require_regular_or_absent(
        path, f"{_WHAT} file", shown,
        directory_hint=f"{_WHAT} '{shown}' is a directory; name a file in it",
    )  # fmt: skip


def _open_private(path: Path, shown: Path) -> int:
    """Open or create `path` (mode 0600) without following a final symlink or blocking on
    a FIFO; what was opened must be a regular file."""
    _refuse_symlink(path, shown)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink planted after the lstat
            raise ConfigError(
                f"{_WHAT} file '{shown}' is a symlink, which ctcli does not follow"
            ) from None
        if exc.errno == errno.EISDIR:
            raise ConfigError(f"{_WHAT} '{shown}' is a directory; name a file in it") from None
        raise ConfigError(f"cannot open {_WHAT} file '{shown}': {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{_WHAT} file '{shown}' is not a regular file; move it away")
    if info.st_mode & 0o077 and info.st_uid == os.geteuid():
        os.fchmod(fd, 0o600)  # SQLite gives the WAL and shm files the database's own mode
    return fd


class Fingerprints:
    """The fingerprints of what CleverTap accepted, per identity, in one SQLite file."""

    def __init__(self, path: str) -> None:
        """Remember the path only: nothing is opened or locked before `open`."""
        self.path = path  # as given, for messages
        given = Path(path)
        # Resolved once: the lock and the database are always the same files.
        self._real = Path(os.path.realpath(given.parent)) / given.name
        self._shown = given
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._mutex = threading.Lock()  # one connection, callers may share it across threads

    # -- open / close --------------------------------------------------------------------

    def open(self) -> Fingerprints:
        """Lock, open (creating it, mode 0600, when missing) and make sure of the schema."""
        if self._db is not None:
            return self
        self._check_directory()
        self._lock()
        try:
            self._db = self._connect()
        except BaseException:
            self._unlock()
            raise
        return self

    def close(self) -> None:
        """Close and unlock; every method has committed already. Closing twice is harmless."""
        with self._mutex:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()  # the last connection checkpoints and removes the WAL
                self._db = None
            self._unlock()

    def __enter__(self) -> Fingerprints:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_directory(self) -> None:
        require_directory(self._real.parent, self._shown, _WHAT)
        _refuse_symlink(self._real, self._shown)

    def _lock(self) -> None:
        lock_path = self._real.with_name(self._real.name + ".lock")
        shown = self._shown.with_name(self._shown.name + ".lock")
        fd = _open_private(lock_path, shown)
        if os.fstat(fd).st_nlink > 1:  # the lock file is truncated: so would its other names
            os.close(fd)
            raise ConfigError(f"lock file '{shown}' has other hard links; remove it")
        hold_lock(fd, shown, f"{_WHAT} '{self._shown}'")
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        for suffix in ("-wal", "-shm"):  # SQLite opens these itself, following symlinks
            side = self._real.with_name(self._real.name + suffix)
            _refuse_symlink(side, self._shown.with_name(self._shown.name + suffix))
        fd = _open_private(self._real, self._shown)
        try:
            opened = os.fstat(fd)
            db = sqlite3.connect(self._real, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open {_WHAT} '{self._shown}': {exc}") from None
        finally:
            os.close(fd)
        try:
            named = os.lstat(self._real)
            if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
                raise ConfigError(f"{_WHAT} file '{self._shown}' was replaced while opening")
            self._prepare(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ConfigError(
                f"{_WHAT} '{self._shown}' is unreadable ({exc}); move it away to start over"
            ) from None
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(f"{_WHAT} '{self._shown}': cannot use a WAL journal here")
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL: safe against a killed process
        db.execute("PRAGMA cache_size=-65536")  # 64 MiB: the hot part of a big table
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("BEGIN IMMEDIATE")
        try:
            application = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if tables and application != APPLICATION_ID:
                raise ConfigError(
                    f"{_WHAT} '{self._shown}' is an SQLite file of something else; "
                    "name another file"
                )
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{_WHAT} '{self._shown}' was written by a newer ctcli "
                    f"(schema {version}); upgrade ctcli"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (IMMEDIATE): committed whole or not at all."""
        with self._mutex:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{_WHAT} '{self._shown}' is not open")
        return self._db

    def _read(self, db: sqlite3.Connection, identities: Sequence[str]) -> dict[str, bytes]:
        """identity -> packed attrs, for those of `identities` (unique) that have a row."""
        found: dict[str, bytes] = {}
        for chunk in _chunks(identities):
            marks = ",".join("?" * len(chunk))
            found.update(
                db.execute(
                    f"SELECT identity, attrs FROM fingerprints WHERE identity IN ({marks})",
                    chunk,
                ).fetchall()
            )
        return found

    def _decode(self, identity: str, blob: bytes) -> dict[str, bytes]:
        try:
            return _unpack(blob)
        except (ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{_WHAT} '{self._shown}': the row of {identity!r} is unreadable ({exc}); "
                "move the file away to start over"
            ) from None

    # -- fingerprints --------------------------------------------------------------------

    def known_packed(self, identities: Sequence[str]) -> dict[str, bytes]:
        """identity -> its stored blob, for those the database knows: most rows of a nightly
        snapshot are unchanged, and one bytes comparison with `packed_fingerprints` says so."""
        with self._mutex:
            db = self._connection()
            db.execute("BEGIN")
            try:
                return self._read(db, _unique(identities))
            finally:
                db.execute("COMMIT")

    def known(self, identities: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """identity -> {attribute: fingerprint} for those of `identities` the database knows,
        read in a few statements however many there are (compare, then send what differs)."""
        with self._mutex:
            db = self._connection()
            db.execute("BEGIN")  # one snapshot for all the chunks
            try:
                rows = self._read(db, _unique(identities))
            finally:
                db.execute("COMMIT")
        return {identity: self._decode(identity, blob) for identity, blob in rows.items()}

    def accepted(
        self,
        records: Sequence[tuple[str, Mapping[str, Any]]],
        wholes: Mapping[str, bytes | None] | None = None,
    ) -> None:
        """Remember what CleverTap accepted: each attribute of each (identity, profileData)
        record gets the fingerprint of its value, but an update operator ({"$incr": 1}...)
        drops the attribute's fingerprint, since the value it leads to is not known here.
        Attributes a record does not name keep theirs. Records apply in order (the same
        identity may come twice), all in one transaction. `wholes`: identity -> the whole
        fingerprint of the full record read (the record sent may be cut to its changes), or
        None to forget it."""
        if not records:
            return
        updates: list[tuple[str, dict[str, bytes | None]]] = []
        for identity, profile in records:
            changes: dict[str, bytes | None] = {}
            for name, value in profile.items():
                changes[name] = None if is_operator(value) else fingerprint(value)
            if wholes is not None and identity in wholes:
                changes[WHOLE] = wholes[identity]
            else:
                changes[WHOLE] = None  # no longer the record it was
            updates.append((identity, changes))
        with self._transaction() as db:
            stored = self._read(db, _unique(identity for identity, _ in updates))
            merged: dict[str, dict[str, bytes]] = {}
            for identity, changes in updates:
                attrs = merged.get(identity)
                if attrs is None:
                    blob = stored.get(identity)
                    attrs = merged[identity] = self._decode(identity, blob) if blob else {}
                for name, print_ in changes.items():
                    if print_ is None:
                        attrs.pop(name, None)
                    else:
                        attrs[name] = print_
            db.executemany(
                "INSERT INTO fingerprints (identity, attrs) VALUES (?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET attrs = excluded.attrs",
                # In key order: neighbouring rows share pages, fewer page writes.
                [(identity, _pack(merged[identity])) for identity in sorted(merged)],
            )

    def forget(self, identities: Sequence[str]) -> None:
        """Drop these identities (their profiles were deleted), in one transaction."""
        if not identities:
            return
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM fingerprints WHERE identity = ?",
                [(identity,) for identity in _unique(identities)],
            )

    # -- runs ----------------------------------------------------------------------------

    def begin_run(self) -> int:
        """A new run number (1, 2, ...), stored with its start time: `seen` marks identities
        with it, so `missing` can tell which ones the run's input no longer has."""
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO runs (started_at) VALUES (?)", (_now(),))
            number = cursor.lastrowid
        assert number is not None
        return number

    def seen(self, identities: Sequence[str], run: int) -> None:
        """Mark these identities as read in run `run`, in one transaction; one not known yet
        gets a row without attributes, so that a later delete-missing pass knows it."""
        if not identities:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO fingerprints (identity, attrs, seen) VALUES (?, ?, ?) "
                "ON CONFLICT (identity) DO UPDATE SET seen = excluded.seen",
                [(identity, _EMPTY, run) for identity in _unique(identities)],
            )

    def missing(self, run: int) -> list[str]:
        """Identities known but not seen in run `run`, sorted: gone from the input, so
        candidates for deletion (only trust it after a run that read its input to the end)."""
        with self._mutex:
            rows = (
                self._connection()
                .execute(
                    "SELECT identity FROM fingerprints WHERE seen IS NOT ? ORDER BY identity",
                    (run,),
                )
                .fetchall()
            )
        return [identity for (identity,) in rows]

    def end_run(self, run: int, *, complete: bool) -> None:
        """Store when run `run` finished and whether it read its input to the end (a run that
        did not must not have its `missing` identities deleted)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET finished_at = ?, complete = ? WHERE number = ?",
                (_now(), int(complete), run),
            )
            if cursor.rowcount != 1:
                raise ValueError(f"run {run} was never begun in {_WHAT} '{self._shown}'")

    # -- looking in ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the file holds and costs: identities, bytes on disk (DB + WAL), runs, and the
        last run with its times (ISO-8601 UTC) and whether it was complete."""
        with self._mutex:
            db = self._connection()
            db.execute("BEGIN")
            try:
                identities = db.execute("SELECT count(*) FROM fingerprints").fetchone()[0]
                runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
                last = db.execute(
                    "SELECT number, started_at, finished_at, complete FROM runs "
                    "ORDER BY number DESC LIMIT 1"
                ).fetchone()
            finally:
                db.execute("COMMIT")
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(self._real.with_name(self._real.name + suffix)).st_size
        last_run = None
        if last is not None:
            number, started_at, finished_at, complete = last
            last_run = {
                "number": number,
                "started_at": started_at,
                "finished_at": finished_at,
                "complete": None if complete is None else bool(complete),
            }
        return {
            "path": self.path,
            "identities": identities,
            "bytes": size,
            "runs": runs,
            "last_run": last_run,
        }

    def describe(self, identity: str) -> dict[str, str] | None:
        """attribute -> fingerprint (hex) of one identity, None when unknown: to see why a
        record was or was not sent."""
        attrs = self.known([identity]).get(identity)
        if attrs is None:
            return None
        return {name: print_.hex() for name, print_ in sorted(attrs.items()) if name != WHOLE}
