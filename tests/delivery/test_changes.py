"""The memory of what CleverTap accepted: fingerprints per identity, runs, the lock, the file."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctcli.delivery.changes import Fingerprints, fingerprint
from ctcli.errors import ConfigError, StateLocked

ROOT = Path(__file__).resolve().parents[2]


def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "fingerprints.db")


def start(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


# -- fingerprint ---------------------------------------------------------------------------


def test_fingerprint_is_8_bytes_and_ignores_key_order():
    assert len(fingerprint("x")) == 8
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint(1) != fingerprint("1")
    assert fingerprint(None) != fingerprint("")


def test_fingerprint_of_an_int_beyond_64_bits():
    big = 2**70
    assert fingerprint(big) == fingerprint(big)
    assert fingerprint(big) != fingerprint(big + 1)


# -- fingerprints --------------------------------------------------------------------------


def test_accepted_then_known_round_trip(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([("u1", {"name": "Ann", "age": 31}), ("u2", {"plan": {"tier": 2}})])
        assert prints.known(["u1", "u2", "nobody"]) == {
            "u1": {"name": fingerprint("Ann"), "age": fingerprint(31)},
            "u2": {"plan": fingerprint({"tier": 2})},
        }
    with Fingerprints(db_path(tmp_path)) as prints:  # and after reopening
        assert prints.known(["u1"])["u1"]["name"] == fingerprint("Ann")


def test_known_over_more_identities_than_one_chunk(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([(f"u{n}", {"n": n}) for n in range(1234)])
        found = prints.known([f"u{n}" for n in range(0, 1300)] + ["u5"])
        assert len(found) == 1234
        assert found["u1200"] == {"n": fingerprint(1200)}


@pytest.mark.parametrize("operator", ["$add", "$remove", "$incr", "$decr", "$delete"])
def test_an_update_operator_drops_the_fingerprint(tmp_path, operator):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([("u1", {"score": 5, "name": "Ann"})])
        prints.accepted([("u1", {"score": {operator: 1}})])
        assert prints.known(["u1"]) == {"u1": {"name": fingerprint("Ann")}}


def test_a_dict_that_is_not_an_operator_is_a_value(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        values = {"a": {"$incr": 1, "x": 2}, "b": {"$other": 1}, "c": {}}
        prints.accepted([("u1", values)])
        assert prints.known(["u1"])["u1"] == {k: fingerprint(v) for k, v in values.items()}


def test_attributes_not_in_a_record_keep_their_fingerprint(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([("u1", {"name": "Ann", "city": "Oslo"})])
        prints.accepted([("u1", {"city": "Bergen"})])
        assert prints.known(["u1"])["u1"] == {
            "name": fingerprint("Ann"),
            "city": fingerprint("Bergen"),
        }


def test_the_same_identity_twice_in_one_call_applies_in_order(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted(
            [
                ("u1", {"city": "Oslo", "score": 1}),
                ("u1", {"city": "Bergen", "score": {"$incr": 2}}),
                ("u1", {"level": 3}),
            ]
        )
        assert prints.known(["u1"])["u1"] == {
            "city": fingerprint("Bergen"),
            "level": fingerprint(3),
        }


def test_forget(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([("u1", {"a": 1}), ("u2", {"a": 2}), ("u3", {"a": 3})])
        prints.forget(["u1", "u3", "never-known"])
        assert set(prints.known(["u1", "u2", "u3"])) == {"u2"}


def test_unicode_and_long_attribute_names(tmp_path):
    long_name = "x" * 300  # a length past one varint byte
    with Fingerprints(db_path(tmp_path)) as prints:
        prints.accepted([("ünï", {"名前": "Ann", long_name: 1, "": 2})])
        assert prints.known(["ünï"])["ünï"] == {
            "名前": fingerprint("Ann"),
            long_name: fingerprint(1),
            "": fingerprint(2),
        }


# -- runs ----------------------------------------------------------------------------------


def test_seen_and_missing_across_two_runs(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints:
        first = prints.begin_run()
        prints.accepted([("a", {"x": 1}), ("b", {"x": 2})])
        prints.seen(["a", "b", "c"], first)  # c: read, not accepted, still known from now on
        assert prints.missing(first) == []
        prints.end_run(first, complete=True)
    with Fingerprints(db_path(tmp_path)) as prints:
        second = prints.begin_run()
        assert second == first + 1
        prints.seen(["b"], second)
        assert prints.missing(second) == ["a", "c"]
        assert prints.known(["b"])["b"] == {"x": fingerprint(2)}  # seen keeps the attributes
        assert prints.known(["c"]) == {"c": {}}
        prints.end_run(second, complete=False)


def test_stats_and_describe(tmp_path):
    path = db_path(tmp_path)
    with Fingerprints(path) as prints:
        stats = prints.stats()
        assert stats["path"] == path
        assert stats["identities"] == 0
        assert stats["runs"] == 0
        assert stats["last_run"] is None
        assert stats["bytes"] > 0
        run = prints.begin_run()
        prints.accepted([("u1", {"name": "Ann", "age": 31}), ("u2", {})])
        started = prints.stats()["last_run"]
        assert started["number"] == run
        assert started["finished_at"] is None and started["complete"] is None
        prints.end_run(run, complete=True)
        stats = prints.stats()
        assert stats["identities"] == 2
        assert stats["runs"] == 1
        last = stats["last_run"]
        assert last["number"] == run and last["complete"] is True
        assert last["started_at"].endswith("+00:00") and last["finished_at"] >= last["started_at"]
        assert prints.describe("u1") == {
            "age": fingerprint(31).hex(),
            "name": fingerprint("Ann").hex(),
        }
        assert prints.describe("u2") == {}
        assert prints.describe("nobody") is None


def test_end_run_of_a_run_never_begun(tmp_path):
    with Fingerprints(db_path(tmp_path)) as prints, pytest.raises(ValueError):
        prints.end_run(7, complete=True)


# -- the lock ------------------------------------------------------------------------------


def test_a_second_open_is_refused_while_the_first_holds_the_lock(tmp_path):
    path = db_path(tmp_path)
    first = Fingerprints(path).open()
    try:
        with pytest.raises(StateLocked) as caught:
            Fingerprints(path).open()
        message = str(caught.value)
        assert path in message and f"pid {os.getpid()}" in message and "\n" not in message
    finally:
        first.close()
    first.close()  # idempotent
    with Fingerprints(path) as again:
        assert again.stats()["identities"] == 0


def test_another_spelling_of_the_path_shares_the_lock(tmp_path):
    (tmp_path / "sub").mkdir()
    with Fingerprints(db_path(tmp_path)), pytest.raises(StateLocked):
        Fingerprints(str(tmp_path / "sub" / ".." / "fingerprints.db")).open()


def test_a_lock_held_by_a_killed_process_is_released(tmp_path):
    path = db_path(tmp_path)
    holder = start(
        "import sys, time\n"
        "from ctcli.delivery.changes import Fingerprints\n"
        "prints = Fingerprints(sys.argv[1]).open()\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n",
        path,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StateLocked) as caught:
            Fingerprints(path).open()
        assert f"pid {holder.pid}" in str(caught.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with Fingerprints(path) as prints:
        assert prints.stats()["identities"] == 0


# -- the file ------------------------------------------------------------------------------


def test_the_files_are_private(tmp_path):
    path = db_path(tmp_path)
    old = os.umask(0o022)
    try:
        with Fingerprints(path) as prints:
            prints.accepted([("u1", {"a": 1})])
            for name in (path, path + ".lock", path + "-wal", path + "-shm"):
                assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name
    finally:
        os.umask(old)


def test_a_symlink_at_the_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere.db"
    link = tmp_path / "fingerprints.db"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symlink"):
        Fingerprints(str(link)).open()
    assert not target.exists()


def test_a_symlink_at_the_lock_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    (tmp_path / "fingerprints.db.lock").symlink_to(target)
    with pytest.raises(ConfigError, match="symlink"):
        Fingerprints(db_path(tmp_path)).open()
    assert not target.exists()


def test_a_directory_at_the_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory") as caught:
        Fingerprints(str(tmp_path)).open()
    assert "\n" not in str(caught.value)


def test_a_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as caught:
        Fingerprints(str(tmp_path / "nowhere" / "fingerprints.db")).open()
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path):
    path = tmp_path / "fingerprints.db"
    path.write_bytes(b"not sqlite at all, " * 100)
    with pytest.raises(ConfigError, match="unreadable"):
        Fingerprints(str(path)).open()


def test_another_programs_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "fingerprints.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(ConfigError, match="something else"):
        Fingerprints(str(path)).open()


def test_a_method_on_a_closed_database_says_so(tmp_path):
    prints = Fingerprints(db_path(tmp_path))
    with pytest.raises(RuntimeError, match="not open"):
        prints.known(["u1"])


# -- crash safety and size -----------------------------------------------------------------

CRASH_SCRIPT = """
import sys
from ctcli.delivery.changes import Fingerprints
prints = Fingerprints(sys.argv[1]).open()
prints.accepted([("before", {"a": 1})])
print("ready", flush=True)
batch = [(f"u{n:07d}", {f"attr{k}": f"value {n} {k}" for k in range(8)}) for n in range(200000)]
print("batch", flush=True)
prints.accepted(batch)
print("done", flush=True)
"""


def kill_when(writer: subprocess.Popen[str], condition, timeout: float = 30.0) -> bool:
    """SIGKILL `writer` as soon as `condition()` holds (polled every millisecond); whether
    it held while the writer was still running."""
    deadline = time.monotonic() + timeout
    try:
        while writer.poll() is None and time.monotonic() < deadline:
            if condition():
                return writer.poll() is None
            time.sleep(0.001)
        return False
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def assert_all_or_none(path: str) -> int:
    with Fingerprints(path) as prints:
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = db.execute("SELECT count(*) FROM fingerprints WHERE identity != 'before'")
            count = rows.fetchone()[0]
        finally:
            db.close()
        assert count in (0, 200000)
        assert prints.known(["before"]) == {"before": {"a": fingerprint(1)}}
        return count


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.5])
def test_a_killed_process_leaves_all_or_none_of_a_batch(tmp_path, delay):
    path = db_path(tmp_path)
    writer = start(CRASH_SCRIPT, path)
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert writer.stdout.readline().strip() == "batch"
        time.sleep(delay)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert_all_or_none(path)


def test_a_process_killed_while_writing_the_wal_leaves_none_of_the_batch(tmp_path):
    path = db_path(tmp_path)
    wal = Path(path + "-wal")
    writer = start(CRASH_SCRIPT, path)
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    start_size = wal.stat().st_size
    # The batch is some 40 MB of pages: killed once 1 MB of it is in the WAL, before its end.
    assert kill_when(writer, lambda: wal.stat().st_size > start_size + 1_000_000)
    assert assert_all_or_none(path) == 0


def test_size_per_identity(tmp_path):
    path = db_path(tmp_path)
    names = [f"attribute_{k}" for k in range(8)]
    with Fingerprints(path) as prints:
        for start_at in range(0, 100_000, 1000):
            prints.accepted(
                [
                    (f"user-{n:08d}", {name: f"{name} of {n}" for name in names})
                    for n in range(start_at, start_at + 1000)
                ]
            )
    size = os.path.getsize(path)  # closed: the WAL is checkpointed into the file
    assert not os.path.exists(path + "-wal")
    per_identity = size / 100_000
    budget = 100 + sum(len(name) + 8 + 2 for name in names)
    print(
        f"\n{size} bytes for 100000 identities: {per_identity:.1f} per identity (budget {budget})"
    )
    assert per_identity < 0.8 * budget


def test_the_whole_record_fingerprint_is_kept_beside_the_attributes(tmp_path):
    from ctcli.delivery.changes import WHOLE, holds_whole, whole_fingerprint

    record = {"plan": "pro", "logins": 3}
    with Fingerprints(str(tmp_path / "w.db")) as store:
        store.accepted([("u1", record)], {"u1": whole_fingerprint(record)})
        (blob,) = store.known_packed(["u1"]).values()
        assert holds_whole(blob, whole_fingerprint(record) or b"")
        assert not holds_whole(blob, whole_fingerprint({"plan": "free", "logins": 3}) or b"")
        assert WHOLE not in (store.describe("u1") or {})  # not an attribute
        store.accepted([("u1", {"logins": {"$incr": 1}})])  # an operator: the record is unknown
        (blob,) = store.known_packed(["u1"]).values()
        assert not holds_whole(blob, whole_fingerprint(record) or b"")
    assert whole_fingerprint({"visits": {"$incr": 1}}) is None
