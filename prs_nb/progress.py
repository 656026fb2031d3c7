"""Terminal progress (tqdm text bar) driven by engine events. The notebook display is in prs_nb.jupyter."""

from __future__ import annotations

import sys
from typing import Any

from prs_nb import events as ev


class TextProgress:
    """A tqdm.std bar: mini-batches done / total, with failed and retried counts; errors summarised at the end."""

    def __init__(self, job_name: str, file: Any = None) -> None:
        self.job_name = job_name
        self.file = file or sys.stderr
        self.bar: Any = None
        self.retried = 0

    def _ensure(self, total: int | None) -> Any:
        if self.bar is None:
            from tqdm.std import tqdm

            self.bar = tqdm(total=total, desc=self.job_name, unit="mb", file=self.file, dynamic_ncols=True,
                            mininterval=0.25)
        return self.bar

    def on_event(self, event: Any) -> None:
        if isinstance(event, ev.BatchesListed):
            bar = self._ensure(event.total if event.complete else None)
            if event.complete and bar.total != event.total:
                bar.total = event.total
                bar.refresh()
        elif isinstance(event, ev.BatchFailed) and event.will_retry:
            self.retried += 1
        elif isinstance(event, ev.Progress):
            bar = self._ensure(event.total)
            if event.total is not None and bar.total != event.total:
                bar.total = event.total
            bar.n = event.done
            bar.set_postfix(failed=event.failed, retried=self.retried, refresh=False)
            bar.refresh()
        elif isinstance(event, ev.JobFinished):
            if self.bar is not None:
                self.bar.set_postfix_str(event.status, refresh=True)
                self.bar.close()
