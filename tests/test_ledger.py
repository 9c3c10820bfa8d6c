"""The ledger: reported, then failed line, then checkpoint, whatever the order of calls."""

from __future__ import annotations

import json
from typing import Any

from ctcli.delivery.checkpoints import StateFile
from ctcli.delivery.failed_file import FailedFile
from ctcli.delivery.ledger import Ledger
from ctcli.models import InputItem, Result, Status


def result(item: InputItem, status: Status, identity: str = "u1") -> Result:
    return Result(item.source, item.line, "identify", None, "upload", identity, status)


class Journal:
    """Fakes of the reporter, failed file and state file that write one journal of calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.unsynced = False

    # reporter
    def report(self, item: InputItem, results: Any) -> None:
        self.calls.append(("report", item.line, tuple(r.status for r in results)))

    def flush_report(self) -> None:
        self.calls.append(("flush report",))

    # failed file
    def write(self, item: InputItem, res: Result) -> None:
        self.unsynced = True
        self.calls.append(("failed line", item.line))

    def supersede(self, res: Result) -> None:
        self.calls.append(("marker", res.identity))

    def flush(self, sync: bool = False) -> None:
        if sync:
            self.unsynced = False
        self.calls.append(("flush failed", sync))

    # state file
    def settle(self, item: InputItem, results: Any, failed_written: bool) -> str | None:
        self.calls.append(("count", item.line, failed_written))
        return None

    def save(self, sync: bool = False) -> None:
        self.calls.append(("save", sync))


def ledger_of(journal: Journal, **options: Any) -> Ledger:
    return Ledger(
        journal.report,
        failed=journal,  # type: ignore[arg-type]
        state=journal,  # type: ignore[arg-type]
        flush_report=journal.flush_report,
        **options,
    )


def test_a_failure_is_written_then_reported_then_counted():
    journal = Journal()
    item = InputItem("in.ndjson", 7, {"type": "identify"})
    ledger_of(journal, clock=lambda: 0.0).record(item, [result(item, Status.FAILED)])
    assert journal.calls == [
        ("failed line", 7),
        ("report", 7, (Status.FAILED,)),
        ("count", 7, True),
    ]


def test_a_checkpoint_flushes_the_report_and_syncs_unsynced_failures_before_saving():
    journal = Journal()
    ledger = ledger_of(journal, clock=lambda: 0.0)
    item = InputItem("in.ndjson", 1, {"type": "identify"})
    ledger.record(item, [result(item, Status.INVALID)])
    journal.calls.clear()
    ledger.checkpoint(durable=False)  # asked cheap, made durable: a failed line is unsynced
    assert journal.calls == [("flush report",), ("flush failed", True), ("save", True)]
    journal.calls.clear()
    ledger.checkpoint(durable=False)  # nothing new failed: cheap
    assert journal.calls == [("flush report",), ("flush failed", False), ("save", False)]


def test_a_durable_checkpoint_follows_a_record_once_a_second_has_passed():
    journal = Journal()
    now = [0.0]
    ledger = ledger_of(journal, clock=lambda: now[0])
    first = InputItem("in.ndjson", 1, {"type": "identify"})
    ledger.record(first, [result(first, Status.OK)])
    assert not any(call[0] == "save" for call in journal.calls)
    now[0] = 1.5
    second = InputItem("in.ndjson", 2, {"type": "identify"})
    ledger.record(second, [result(second, Status.OK)])
    assert journal.calls[-4:] == [
        ("count", 2, True),
        ("flush report",),
        ("flush failed", True),
        ("save", True),
    ]
    assert journal.calls.count(("save", True)) == 1


def test_items_of_no_file_are_reported_but_never_counted():
    journal = Journal()
    ledger = ledger_of(journal, clock=lambda: 0.0)
    arg = InputItem("args", 1, {"type": "identify"})
    filed = InputItem("args", 1, {"type": "identify"})  # a file named "args", same line
    (marked,) = list(ledger.unfiled([arg]))
    ledger.record(marked, [result(marked, Status.OK)])
    ledger.record(filed, [result(filed, Status.OK)])
    assert [call[0] for call in journal.calls] == ["report", "report", "count"]


def test_a_dry_run_follows_the_files_but_never_saves():
    journal = Journal()
    ledger = ledger_of(journal, clock=lambda: 0.0, save=False)
    item = InputItem("in.ndjson", 1, {"type": "identify"})
    ledger.record(item, [result(item, Status.DRY_RUN)])
    ledger.checkpoint()
    assert ("count", 1, True) in journal.calls
    assert not any(call[0] == "save" for call in journal.calls)


def test_with_real_files_the_checkpoint_never_counts_a_failure_the_failed_file_lacks(tmp_path):
    source = tmp_path / "in.ndjson"
    lines = [{"type": "identify", "userId": f"u{n}", "traits": {"a": n}} for n in (1, 2)]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    failed = FailedFile(str(tmp_path / "failed.ndjson"))
    state = StateFile(str(tmp_path / "run.state"))
    state.lock()
    state.load()
    state.begin_file(str(source))
    reported: list[int] = []
    ledger = Ledger(lambda item, results: reported.append(item.line), failed=failed, state=state)
    offset = 0
    for number, line in enumerate(lines, start=1):
        offset += len(json.dumps(line)) + 1
        item = InputItem(str(source), number, line, end_offset=offset)
        status = Status.FAILED if number == 2 else Status.OK
        ledger.record(item, [result(item, status, identity=f"u{number}")])
    ledger.checkpoint()
    failed.close()
    state.unlock()
    saved = json.loads((tmp_path / "run.state").read_text())
    (entry,) = saved["files"].values()
    assert entry["line"] == 2 and reported == [1, 2]
    failed_lines = [
        json.loads(text) for text in (tmp_path / "failed.ndjson").read_text().splitlines()
    ]
    assert [line["line"] for line in failed_lines] == [2]
