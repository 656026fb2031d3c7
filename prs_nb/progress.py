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
        self.failures: list[Any] = []  # failed attempts, for the summary printed at the end
        self.failed_attempts = 0

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
        elif isinstance(event, ev.BatchFailed):
            self.retried += event.will_retry
            self.failed_attempts += 1
            if len(self.failures) < 3:
                self.failures.append(event)
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
            self._print_errors(event)

    def _print_errors(self, event: Any) -> None:
        """The error summary a terminal gets instead of the notebook's error table."""
        if not self.failures:
            return
        lines = [f"{self.job_name}: {event.status}" + (f" - {event.reason}" if event.reason else ""),
                 f"  failed attempts: {self.failed_attempts} ({self.retried} retried)"]
        for e in self.failures:
            first = (e.message or "").strip().splitlines()[0][:160] if (e.message or "").strip() else ""
            lines.append(f"    mini-batch {e.index} attempt {e.attempt} on {e.process_name}: {e.exc_type}: {first}")
        if self.failed_attempts > len(self.failures):
            lines.append(f"    ... first {len(self.failures)} shown, {self.failed_attempts - len(self.failures)} more "
                         "in result.errors and the logs (job_error.txt)")
        print("\n".join(lines), file=self.file, flush=True)
