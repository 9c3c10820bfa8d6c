"""The one rule of what a settled event leaves behind: reported, then its failed line, then counted.

Every event's results go to the reporter first, so that what a checkpoint counts as settled has
reached stdout; its failed and invalid results are written to the failed file before that, and
flushed (and, when the checkpoint is to be durable, synced) before the checkpoint is saved, so
that a checkpoint never counts an event whose failed line could still be lost. A killed run
therefore re-sends at most what was not yet counted, and loses no failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from ctcli.delivery.checkpoints import StateFile
from ctcli.delivery.failed_file import FailedFile
from ctcli.models import InputItem, Result, Status

Reporter = Callable[[InputItem, Sequence[Result]], None]

DURABLE_EVERY = 1.0  # seconds between checkpoints that are synced to disk


class Ledger:
    """Records each settled event: failed file, reporter, checkpoint, in that order.

    `report` gets every event's results in input order; `flush_report` pushes what it holds
    to its stream (called before any checkpoint is saved); `warn` gets what the checkpoint
    has to say (a file that changed under it). `failed` and `state` are optional; a dry run
    keeps `state` to follow the files but never saves it (`save=False`).
    """

    def __init__(
        self,
        report: Reporter,
        *,
        failed: FailedFile | None = None,
        state: StateFile | None = None,
        flush_report: Callable[[], None] | None = None,
        warn: Callable[[str], object] = lambda message: None,
        save: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._failed = failed
        self._state = state
        self._flush_report = flush_report
        self._warn = warn
        self._save = save
        self._clock = clock
        self._last_durable = clock()
        # Items that belong to no file (the command line, a caller's events) are reported but
        # never counted by the checkpoint; known by id() from read to record, alive until then.
        self._unfiled: set[int] = set()

    def unfiled(self, items: Iterable[InputItem]) -> Iterator[InputItem]:
        """`items`, marked as belonging to no file as they pass."""
        for item in items:
            self._unfiled.add(id(item))
            yield item

    def record(self, item: InputItem, results: Sequence[Result]) -> None:
        failed = self._failed
        if failed is not None:
            for result in results:
                if result.status is Status.FAILED or result.status is Status.INVALID:
                    failed.write(item, result)
                elif result.supersedes is not None:
                    failed.supersede(result)
        self._report(item, results)
        if self._unfiled and id(item) in self._unfiled:
            self._unfiled.discard(id(item))
            return
        state = self._state
        if state is None:
            return
        held = state.settle(item, results, failed_written=failed is not None)
        if held:
            self._warn(held)
        if self._clock() - self._last_durable > DURABLE_EVERY:
            self.checkpoint()

    def flush(self) -> None:
        """The run went quiet: failed lines and reported results reach their files."""
        if self._failed is not None:
            self._failed.flush()
        if self._flush_report is not None:
            self._flush_report()

    def checkpoint(self, durable: bool = True) -> None:
        """Flush what the checkpoint counts on, then save it.

        After each answered batch the save is cheap (no fsync): a killed run then re-sends at
        most what was in flight. Each second, at the end, and whenever failed lines were written
        since the last sync, it is durable, the failed file synced first.
        """
        state = self._state
        if state is None or not self._save:
            return
        if self._flush_report is not None:
            self._flush_report()
        failed = self._failed
        if failed is not None:
            durable = durable or failed.unsynced
            failed.flush(sync=durable)
        state.save(sync=durable)
        if durable:
            self._last_durable = self._clock()
