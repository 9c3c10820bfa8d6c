"""The pipeline: one result per event and action, in input order, whatever the sender does."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from ctcli.cli.exits import exit_status_of_run
from ctcli.delivery.client import Outcome
from ctcli.delivery.pipeline import Pipeline, PipelineOptions
from ctcli.errors import CredentialsRejected, ExitStatus
from ctcli.events.subscriptions import PRESETS, route
from ctcli.models import Action, FieldMapping, InputItem, Result, Status


@dataclass
class FakeSender:
    """Answers every record ok, except identities listed in `refuse`; counts calls."""

    refuse: frozenset[str] = frozenset()
    reject_credentials_after: int | None = None
    requests: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        self.upload_sizes: list[int] = []
        self.delete_sizes: list[int] = []
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.requests += 1
            if (
                self.reject_credentials_after is not None
                and self.requests > self.reject_credentials_after
            ):
                raise CredentialsRejected("CleverTap refused the credentials (HTTP 401)")

    def upload(self, records: list[dict]) -> list[Outcome]:
        self._count()
        self.upload_sizes.append(len(records))
        return [
            Outcome(False, 516, "Phone number invalid")
            if record["identity"] in self.refuse
            else Outcome(True)
            for record in records
        ]

    def delete(self, identities: list[str]) -> list[Outcome]:
        self._count()
        self.delete_sizes.append(len(identities))
        return [Outcome(True) for _ in identities]


def identify(n: int, **traits: object) -> dict:
    return {"type": "identify", "userId": f"u{n}", "traits": {"name": f"User {n}", **traits}}


def items_of(events: list[dict | None], source: str = "in.ndjson") -> list[InputItem]:
    items = []
    for line, event in enumerate(events, start=1):
        if event is None:
            items.append(InputItem(source, line, None, error="invalid JSON", raw="{oops"))
        else:
            items.append(InputItem(source, line, event))
    return items


def replay_router(item: InputItem):
    return route(item.event or {}, PRESETS)


def run(items, sender=None, *, dry_run=False, batch_size=1000, concurrency=4, router=None):
    collected: list[Result] = []

    def sink(item: InputItem, results) -> None:
        collected.extend(results)

    pipeline = Pipeline(
        router=router or replay_router,
        sender=sender,
        sink=sink,
        options=PipelineOptions(
            batch_size=batch_size, concurrency=concurrency, dry_run=dry_run, now=lambda: 1700000000
        ),
    )
    summary = pipeline.run(items)
    return collected, summary


def test_every_event_gets_one_result_in_input_order():
    events = [identify(n) for n in range(2500)]
    sender = FakeSender()
    results, summary = run(items_of(events), sender, batch_size=100, concurrency=8)
    assert [r.line for r in results] == list(range(1, 2501))
    assert all(r.status is Status.OK for r in results)
    assert summary.events == 2500 and summary.ok == 2500


def test_uploads_are_batched_up_to_batch_size():
    sender = FakeSender()
    run(items_of([identify(n) for n in range(2050)]), sender, batch_size=1000)
    assert sorted(sender.upload_sizes, reverse=True) == [1000, 1000, 50]


def test_deletes_go_at_most_100_per_request():
    events = [{"type": "track", "event": "Delete User", "userId": f"d{n}"} for n in range(250)]
    sender = FakeSender()
    results, _ = run(items_of(events), sender, batch_size=1000)
    assert max(sender.delete_sizes) <= 100 and sum(sender.delete_sizes) == 250
    assert all(r.action == "delete" and r.status is Status.OK for r in results)


def test_unmatched_events_are_skipped_with_no_action():
    results, summary = run(items_of([{"type": "page", "userId": "u1"}]), FakeSender())
    assert results[0].status is Status.SKIPPED and results[0].action is None
    assert exit_status_of_run(summary) is ExitStatus.OK


def test_bad_items_are_invalid_and_the_rest_goes_on():
    results, summary = run(items_of([identify(1), None, identify(3)]), FakeSender())
    assert [r.status for r in results] == [Status.OK, Status.INVALID, Status.OK]
    assert results[1].error == "invalid JSON" and results[1].line == 2
    assert exit_status_of_run(summary) is ExitStatus.EVENTS_FAILED


def test_a_record_refused_by_clevertap_is_failed_with_its_code():
    sender = FakeSender(refuse=frozenset({"u2"}))
    results, summary = run(items_of([identify(n) for n in range(5)]), sender)
    failed = [r for r in results if r.status is Status.FAILED]
    assert [(r.identity, r.code) for r in failed] == [("u2", 516)]
    assert summary.ok == 4 and summary.failed == 1


def test_mapping_errors_are_invalid_with_the_reason():
    results, _ = run(items_of([identify(1, phone="4155550100")]), FakeSender())
    assert results[0].status is Status.INVALID
    assert "Phone" in results[0].error


def test_dry_run_sends_nothing_and_reports_dry_run():
    results, summary = run(items_of([identify(1), identify(2)]), None, dry_run=True)
    assert [r.status for r in results] == [Status.DRY_RUN, Status.DRY_RUN]
    assert summary.requests == 0 and exit_status_of_run(summary) is ExitStatus.OK


def test_refused_credentials_fail_every_event_not_accepted():
    sender = FakeSender(reject_credentials_after=1)
    results, summary = run(
        items_of([identify(n) for n in range(500)]), sender, batch_size=100, concurrency=1
    )
    assert len(results) == 500
    assert sum(r.status is Status.OK for r in results) == 100
    refused = [r for r in results if r.status is Status.FAILED]
    assert len(refused) == 400 and all(r.error == "credentials refused" for r in refused)
    assert exit_status_of_run(summary) is ExitStatus.CREDENTIALS_REFUSED


def test_an_event_for_two_actions_gets_two_results():
    def both(item: InputItem):
        from ctcli.job import command_subscription

        mapping = FieldMapping()
        return [
            command_subscription(Action.UPLOAD, mapping),
            command_subscription(Action.DELETE, mapping),
        ]

    results, _ = run(items_of([identify(1)]), FakeSender(), router=both)
    assert [(r.action, r.status) for r in results] == [("upload", "ok"), ("delete", "ok")]


def test_a_sender_bug_fails_the_batch_instead_of_losing_it():
    class Broken(FakeSender):
        def upload(self, records):
            raise RuntimeError("boom")

    results, _ = run(items_of([identify(1), identify(2)]), Broken())
    assert [r.status for r in results] == [Status.FAILED, Status.FAILED]
    assert "boom" in results[0].error


def test_stop_event_ends_reading_and_reports_what_was_read():
    stop = threading.Event()
    collected: list[Result] = []

    def items():
        for n in range(10_000):
            if n == 300:
                stop.set()
            yield InputItem("in", n + 1, identify(n))

    pipeline = Pipeline(
        router=replay_router,
        sender=FakeSender(),
        sink=lambda item, results: collected.extend(results),
        options=PipelineOptions(batch_size=100),
        stop=stop,
    )
    summary = pipeline.run(items())
    assert summary.interrupted and exit_status_of_run(summary) is ExitStatus.INTERRUPTED
    assert summary.events < 10_000  # reading stopped soon after the stop event
    assert [r.line for r in collected] == list(range(1, summary.events + 1))
    assert all(r.status is Status.OK for r in collected)


def test_a_half_full_batch_is_sent_when_the_input_goes_quiet():
    sent = threading.Event()

    class Watching(FakeSender):
        def upload(self, records):
            sent.set()
            return super().upload(records)

    def items():
        yield InputItem("-", 1, identify(1))
        yield None  # "nothing new yet" from a slow producer
        assert sent.wait(5), "the open batch was not sent while the input was quiet"
        yield InputItem("-", 2, identify(2))

    results, _ = run(items(), Watching())
    assert [r.status for r in results] == [Status.OK, Status.OK]


@pytest.mark.parametrize("concurrency", [1, 3, 15])
def test_results_stay_in_order_with_any_concurrency(concurrency):
    events = [identify(n) if n % 7 else {"type": "page"} for n in range(1200)]
    results, _ = run(items_of(events), FakeSender(), batch_size=50, concurrency=concurrency)
    assert [r.line for r in results] == list(range(1, 1201))
