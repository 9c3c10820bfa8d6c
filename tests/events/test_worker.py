"""A large file is read, parsed and mapped in a worker process; nothing observable changes.

The worker takes files from a size threshold on; here the threshold is lowered so that small
files go through it, and every run is compared with the same run in one process.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest

import ctcli.events.workers
from tests.helpers import invoke, write_ndjson

LONG_EMAIL = "x" * 250 + "@example.com"  # sent by ctcli, refused by the sandbox (515)


def mixed_events(count: int) -> list[Any]:
    events: list[Any] = []
    for n in range(count):
        user = f"u{n % 97}"
        if n % 50 == 7:
            events.append({"type": "track", "event": "Delete User", "userId": user})
        elif n % 50 == 11:
            events.append({"type": "identify", "userId": user, "traits": {"phone": "555"}})
        elif n % 50 == 13:
            events.append({"type": "identify", "userId": user, "traits": {"email": LONG_EMAIL}})
        elif n % 50 == 17:
            events.append("{not json")
        elif n % 50 == 19:
            events.append({"type": "page", "userId": user})
        else:
            traits = {"plan": f"p{n}", "signup": "2023-11-05T14:30:00+01:00", "n": n}
            if n % 3 == 0:
                traits["visits"] = {"$incr": 1}
            events.append(
                {
                    "type": "identify",
                    "userId": user,
                    "traits": traits,
                    "timestamp": 1_700_000_000 + n,
                }
            )
    return events


def unnumbered(text: str) -> str:
    # Which record of its request a refused one was depends on how batches formed, which
    # depends on when answers came: not on where the file was parsed.
    return re.sub(r"Skipped record number : \d+", "Skipped record number : N", text)


@pytest.fixture
def with_worker(monkeypatch):
    def switch(on: bool) -> None:
        monkeypatch.setattr(ctcli.events.workers, "MIN_FILE_BYTES", 0 if on else 1 << 60)

    return switch


@pytest.mark.parametrize("command", ["upload", "replay"])
def test_a_dry_run_through_the_worker_prints_exactly_what_one_process_prints(
    env, tmp_path, with_worker, command
):
    path = write_ndjson(tmp_path / "in.ndjson", mixed_events(1500))
    outputs = []
    for on in (False, True):
        with_worker(on)
        result = invoke(command, "--dry-run", "-o", "ndjson", path)
        outputs.append((result.exit_code, result.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0][1].count("\n") >= 1500


def test_a_run_through_the_worker_sends_writes_and_checkpoints_as_one_process_does(
    live, tmp_path, with_worker
):
    path = write_ndjson(tmp_path / "in.ndjson", mixed_events(3000))
    seen = []
    for on in (False, True):
        with_worker(on)
        live.reset()
        failed = tmp_path / f"failed-{on}.ndjson"
        state = tmp_path / f"state-{on}.json"
        result = invoke("replay", "-o", "ndjson", "--batch-size", "50", "--failed", str(failed),
                        "--state", str(state), path)  # fmt: skip
        checkpoint = json.loads(state.read_text())
        seen.append(
            (result.exit_code, unnumbered(result.stdout), unnumbered(failed.read_text()),
             live.profiles(), json.dumps(checkpoint.get("files"), sort_keys=True))
        )  # fmt: skip
    for one, worker in zip(seen[0], seen[1], strict=True):
        if one != worker and isinstance(one, str):
            import difflib

            diff = difflib.unified_diff(one.splitlines(), worker.splitlines(), lineterm="", n=0)
            raise AssertionError("\n".join(list(diff)[:12]))
        assert one == worker
    assert "515" in seen[1][2]  # refused records reached the failed file with their events


def test_a_read_error_in_the_worker_is_reported_and_later_files_still_go(
    live, tmp_path, with_worker
):
    with_worker(True)
    data = "".join(json.dumps(e) + "\n" for e in mixed_events(400)).encode()
    broken = tmp_path / "broken.ndjson.gz"
    packed = gzip.compress(data)
    broken.write_bytes(packed[: len(packed) // 2])
    good = write_ndjson(
        tmp_path / "good.ndjson", [{"type": "identify", "userId": "g", "traits": {"a": 1}}]
    )

    result = invoke("upload", "-o", "ndjson", str(broken), good)

    assert result.exit_code == 2
    assert "broken.ndjson.gz" in result.stderr
    assert "g" in live.profiles()


def tricky_lines(count: int) -> bytes:
    """Lines that yield no item, one, or several: what a worker passing over them must count."""
    event = b'{"type":"identify","userId":"u%d","traits":{"plan":"p%d"}}'
    pieces: list[bytes] = []
    for n in range(count):
        kind = n % 9
        if kind == 1:
            pieces.append(b"\n")  # blank: no item
        elif kind == 2:
            batch = [{"type": "identify", "userId": f"b{n}-{k}"} for k in range(3)]
            pieces.append(json.dumps({"batch": batch}).encode() + b"\n")  # three items
        elif kind == 3:
            pieces.append((event % (n, n)) + b"\r" + (event % (n + 1, n)) + b"\r\n")  # two
        elif kind == 4:
            pieces.append(b"{broken\n")  # one invalid item
        elif kind == 5:
            pieces.append(b"\xef\xbb\xbf" + (event % (n, n)) + b"\n")  # a BOM where files joined
        else:
            pieces.append((event % (n, n)) + b"\n")
    return b"".join(pieces)


def test_items_passed_over_unparsed_keep_every_later_item_at_its_place(tmp_path):
    from ctcli.events.sources import SKIPPED, read_source

    path = tmp_path / "tricky.ndjson"
    path.write_bytes(tricky_lines(400))
    every = list(read_source(str(path)))
    for pattern in ([True, False], [False, True, True], [True] * 5 + [False]):
        asked = iter(pattern * 1000)
        got = list(read_source(str(path), skip=lambda asked=asked: next(asked)))
        assert len(got) == len(every)
        kept = [(a, b) for a, b in zip(got, every, strict=True) if a is not SKIPPED]
        assert kept and len(kept) < len(every)
        assert all((a.line, a.event, a.error) == (b.line, b.event, b.error) for a, b in kept)


def test_a_dry_run_of_tricky_lines_through_the_worker_prints_what_one_process_prints(
    env, tmp_path, with_worker
):
    path = tmp_path / "tricky.ndjson"
    path.write_bytes(tricky_lines(3000))
    outputs = []
    for on in (False, True):
        with_worker(on)
        result = invoke("upload", "--dry-run", "-o", "ndjson", str(path))
        outputs.append((result.exit_code, result.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0][1].count('"status":"invalid"') >= 300
