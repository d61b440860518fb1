"""Sync progress: a live bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("pbe_fs.sync")
_active: list[Any] = []


def active_bar() -> Any:
    """The progress bar on screen, if any: log lines must go above it."""
    return _active[-1] if _active else None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """Counts works, files and bytes; shows them at a bounded rate."""

    def __init__(self, enabled: bool | None = None, interval: float = 10.0, desc: str = "sync") -> None:
        self.works_total = 0
        self.works = 0
        self.files = 0
        self.bytes = 0
        self._start = time.monotonic()
        self._last_log = self._start
        self._interval = interval
        self._bar: Any = None
        tty = sys.stderr.isatty() if enabled is None else enabled
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="work", desc=desc, dynamic_ncols=True, leave=False, file=sys.stderr)
            _active.append(self._bar)

    def _rate(self) -> float:
        return self.bytes / max(1e-6, time.monotonic() - self._start)

    def summary(self) -> str:
        return (f"{self.works}/{self.works_total} works, {self.files} files, "
                f"{human_bytes(self.bytes)} ({human_bytes(self._rate())}/s)")

    def add_works(self, count: int) -> None:
        self.works_total += count
        if self._bar is not None:
            self._bar.total = self.works_total
            self._bar.refresh()

    def file_done(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        self._show()

    def work_done(self) -> None:
        self.works += 1
        if self._bar is not None:
            self._bar.update(1)
        self._show()

    def _show(self) -> None:
        now = time.monotonic()
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.files} files, {human_bytes(self.bytes)}, {human_bytes(self._rate())}/s",
                                      refresh=False)
        elif now - self._last_log >= self._interval:
            self._last_log = now
            log.info("progress: %s", self.summary())

    def close(self) -> None:
        if self._bar is not None:
            _active.remove(self._bar)
            self._bar.close()
            self._bar = None
