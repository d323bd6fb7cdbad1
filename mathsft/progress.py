"""The study's console: one line per stage, ``[3/8] train lora lr=2e-4 ... done in 41 s``."""

from __future__ import annotations

from pathlib import Path


def format_duration(seconds: float | None) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


class Progress:
    """Console lines: ``[3/8] train lora lr=2e-4 ... done in 41 s``."""

    def __init__(self, total: int, stream: bool = False) -> None:
        self.total = total
        self.index = 0
        self.stream = stream

    def _prefix(self) -> str:
        self.index += 1
        return f"[{self.index}/{self.total}]"

    def line(self, description: str, status: str) -> None:
        print(f"{self._prefix()} {description} ... {status}", flush=True)

    def start(self, description: str, log: Path) -> None:
        # With streaming, the stage's own output follows, so the start gets a line of its own.
        end = "\n" if self.stream else ""
        print(f"{self._prefix()} {description} (log: {log}) ...", end=end, flush=True)

    def line_end(self, status: str) -> None:
        """End the running stage's line with ``status`` (a stage that ended without failing the study)."""
        print(f" {status}" if not self.stream else f"[{self.index}/{self.total}] ... {status}", flush=True)

    def fail(self) -> None:
        print(" failed" if not self.stream else f"[{self.index}/{self.total}] ... failed", flush=True)

    def finish(self, seconds: float) -> None:
        prefix = f"[{self.index}/{self.total}] ..." if self.stream else ""
        print(f"{prefix} done in {format_duration(seconds)}", flush=True)


