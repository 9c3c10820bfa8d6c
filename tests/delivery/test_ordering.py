"""Lanes per identity: what may go on the wire next, and merges that change nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ctcli.delivery.ordering import Scheduler, Work, merged_upload
from ctcli.models import Action


def record(identity: str, ts: int | None = 1, **profile: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "profile", "identity": identity, "profileData": profile}
    if ts is not None:
        data["ts"] = ts
    return data


def upload(identity: str, event: int, **profile: Any) -> Work:
    return Work(Action.UPLOAD, identity, record(identity, ts=event, **profile), [(event, 0)])


def delete(identity: str, event: int) -> Work:
    return Work(Action.DELETE, identity, identity, [(event, 0)])


def ready(scheduler: Scheduler) -> list[list[Any]]:
    batches = []
    while (batch := scheduler.next_ready()) is not None:
        batches.append(batch)
    return batches


def test_a_busy_identity_waits_while_others_go_ahead():
    scheduler = Scheduler(upload_limit=2, delete_limit=2)
    first = upload("a", 1, plan="x")
    scheduler.add(first, 0)
    scheduler.add(upload("b", 2, plan="y"), 0)  # fills the first batch: a, b
    scheduler.add(delete("a", 3), 0)  # a is out: waits in its lane
    scheduler.add(upload("c", 4, plan="z"), 0)
    scheduler.close_open(0)

    sent = ready(scheduler)
    assert [[w.identity for w in batch.works] for batch in sent] == [["a", "b"], ["c"]]

    scheduler.answered(first, 0)  # a's upload is answered: its delete may go now
    scheduler.close_open(0)
    (after,) = ready(scheduler)
    assert after.action is Action.DELETE and [w.identity for w in after.works] == ["a"]


def test_no_batch_ever_holds_one_identity_twice():
    scheduler = Scheduler(upload_limit=1000, delete_limit=100)
    for event in range(50):
        scheduler.add(upload("same", event, visits={"$incr": 1}), 0)  # never merged
    scheduler.close_open(0)
    (batch,) = ready(scheduler)
    assert len(batch.works) == 1
    assert not scheduler.idle


def test_plain_updates_of_a_waiting_identity_merge_into_one_record():
    scheduler = Scheduler(upload_limit=10, delete_limit=10)
    out = upload("a", 1, plan="x")
    scheduler.add(out, 0)
    scheduler.close_open(0)
    ready(scheduler)
    for event, plan in ((2, "y"), (3, "z")):
        scheduler.add(upload("a", event, plan=plan, **{f"k{event}": event}), 0)
    scheduler.answered(out, 0)
    scheduler.close_open(0)

    (batch,) = ready(scheduler)
    (merged,) = batch.works
    assert merged.payload == record("a", ts=3, plan="z", k2=2, k3=3)
    assert merged.targets == [(2, 0), (3, 0)]
    assert scheduler.merged == 1


def test_a_refused_merged_record_comes_apart_in_input_order():
    scheduler = Scheduler(upload_limit=10, delete_limit=10)
    scheduler.add(upload("a", 1, plan="x"), 0)
    scheduler.add(upload("a", 2, seats=2), 0)
    scheduler.close_open(0)
    (batch,) = ready(scheduler)
    (merged,) = batch.works

    scheduler.take_apart(merged, 0)
    scheduler.close_open(0)
    (first,) = ready(scheduler)
    assert first.works[0].targets == [(1, 0)]
    scheduler.answered(first.works[0], 0)
    scheduler.add(upload("a", 3, plan="later"), 0)  # must not merge into a part sent alone
    scheduler.close_open(0)
    (second,) = ready(scheduler)
    assert second.works[0].targets == [(2, 0)]


def test_deletes_in_a_row_are_one_delete():
    scheduler = Scheduler(upload_limit=10, delete_limit=10)
    scheduler.add(delete("a", 1), 0)
    scheduler.add(delete("a", 2), 0)
    scheduler.close_open(0)
    (batch,) = ready(scheduler)
    assert batch.payloads == ["a"] and batch.works[0].targets == [(1, 0), (2, 0)]


def test_a_merge_that_would_pass_the_custom_property_limit_is_not_made():
    first = record("a", **{f"a{n}": n for n in range(200)})
    second = record("a", **{f"b{n}": n for n in range(100)})
    assert merged_upload(first, second) is None


plain_values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
profiles = st.dictionaries(st.sampled_from("abcde"), plain_values, max_size=5)


@given(st.lists(st.tuples(profiles, st.one_of(st.none(), st.integers(1, 10))), min_size=2))
def test_merging_plain_updates_is_the_same_as_applying_them_in_turn(updates):
    applied: dict[str, Any] = {}
    ts = None
    merged = None
    for profile, stamp in updates:
        applied.update(profile)
        ts = stamp if stamp is not None else ts
        next_record = record("a", ts=stamp, **profile)
        merged = next_record if merged is None else merged_upload(merged, next_record)
    assert merged is not None
    assert merged["profileData"] == applied and merged.get("ts") == ts


def test_operators_never_merge():
    assert merged_upload(record("a", n=1), record("a", n={"$incr": 1})) is None
    assert merged_upload(record("a", n={"$add": ["x"]}), record("a", m=1)) is None
