"""Statuses are listed once (models.Status); the summary and the table follow that list."""

from __future__ import annotations

from ctcli.cli.report import STATUS_STYLES
from ctcli.delivery.pipeline import Summary
from ctcli.models import Status


def test_every_status_has_a_style_and_a_count_in_the_summary():
    assert set(STATUS_STYLES) == set(Status)
    summary = Summary()
    summary.add_counts({status: position + 1 for position, status in enumerate(Status)})
    written = summary.to_dict()
    for position, status in enumerate(Status):
        assert summary.count(status) == written[str(status)] == position + 1
    assert list(written)[1 : 1 + len(Status)] == [str(status) for status in Status]
