"""Work functions for the benchmarks (module level, so every peer's workers can import them)."""

from __future__ import annotations

import os
import time


def trivial(path: str) -> str:
    return os.path.basename(path)


def prs_trivial(mini_batch: list[str]) -> list[str]:
    return [os.path.basename(p) for p in mini_batch]


def _burn(seconds: float) -> int:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def burn_50ms(mini_batch: list) -> list[int]:
    return [_burn(0.05)]


def burn_50ms_item(i: int) -> int:
    return _burn(0.05)


def count_rows(mini_batch) -> list[int]:
    return [0] * len(mini_batch)
