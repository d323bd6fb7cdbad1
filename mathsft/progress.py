"""The study's console: one line per stage, ``[3/8] train lora lr=2e-4 ... done in 41 s``, showing the running
stage's live progress on that line (``step 120/430, loss 0.823, ETA 3 min 10 s``).

The progress is read from the stage's own output (:class:`StageOutputParser`): the Trainer prints a tqdm bar of
optimizer steps and ``{'loss': ...}`` dicts, its validation runs a nested tqdm bar, and ``run_eval.py`` prints a
``generating`` bar of answers. On a terminal the line is rewritten in place; elsewhere (a CI log, ``nohup``) the
progress gets a line of its own at most every :data:`LOG_INTERVAL_S` seconds, so logs stay short.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

LOG_INTERVAL_S = 30.0  # not a terminal: at most one progress line per stage this often
TTY_INTERVAL_S = 0.5  # a terminal: redraw at most this often
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CURSOR_UP = "\x1b[A"  # tqdm draws a nested bar (position 1, the Trainer's validation) one line down, then goes up
# A tqdm bar: "desc:  42%|████▏     | 120/430 [01:10<03:02,  1.70it/s, ...]" (desc is optional).
_BAR = re.compile(
    r"(?:(?P<desc>[^|\r\n]*?):\s*)?(?P<percent>\d+)%\|[^|]*\|\s*(?P<done>\d+)/(?P<total>\d+)"
    r"\s*\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:]+|\?)"
)
_LOSS = re.compile(r"[{,]\s*'loss':\s*'?(?P<loss>[-+0-9.eE]+|nan|inf)'?")
_MAX_PARTIAL = 65536  # an unterminated segment longer than this is no progress bar


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


def parse_clock(text: str) -> float | None:
    """tqdm's ``MM:SS`` or ``H:MM:SS`` in seconds; None for ``?``."""
    try:
        parts = [int(part) for part in text.split(":")]
    except ValueError:
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


@dataclass
class BarState:
    done: int
    total: int
    remaining_s: float | None


class StageOutputParser:
    """Fed a stage's raw output chunk by chunk; :meth:`status` says where the stage stands, or None before any
    training or generation progress was seen."""

    def __init__(self) -> None:
        self._partial = ""
        self.training: BarState | None = None
        self.validation: BarState | None = None  # the Trainer's nested bar, while it runs
        self.generation: BarState | None = None
        self.loss: str | None = None

    def feed(self, chunk: bytes | str) -> None:
        text = chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else chunk
        segments = re.split(r"[\r\n]", self._partial + text)
        self._partial = segments.pop()[-_MAX_PARTIAL:]  # the rest of the last segment is still to come
        for segment in segments:
            self._read(segment)

    def _read(self, segment: str) -> None:
        loss = _LOSS.search(segment)
        if loss:
            self.loss = loss.group("loss")
        bar = _BAR.search(_ANSI.sub("", segment))
        if bar is None:
            return
        state = BarState(int(bar["done"]), int(bar["total"]), parse_clock(bar["remaining"]))
        desc = (bar["desc"] or "").strip()
        if desc == "generating":
            self.generation = state
        elif desc:
            return  # loading weights, tokenizing, writing shards: not the stage's progress
        elif segment.rstrip().endswith(_CURSOR_UP):
            self.validation = state if state.done < state.total else None
        else:
            self.training, self.validation = state, None

    def status(self) -> str | None:
        if self.training is not None:
            bar = self.training
            parts = [f"step {bar.done}/{bar.total}"]
            if self.loss is not None:
                parts.append(f"loss {self.loss}")
            if self.validation is not None:
                parts.append(f"validating {self.validation.done}/{self.validation.total}")
            elif bar.remaining_s is not None and bar.done < bar.total:
                parts.append(f"ETA {format_duration(bar.remaining_s)}")
            return ", ".join(parts)
        if self.generation is not None:
            bar = self.generation
            running = bar.remaining_s is not None and 0 < bar.done < bar.total
            eta = f", ETA {format_duration(bar.remaining_s)}" if running else ""
            return f"generated {bar.done}/{bar.total} answers{eta}"
        return None


class Progress:
    """Console lines: ``[3/8] train lora lr=2e-4 ... done in 41 s``, with the running stage's progress."""

    def __init__(self, total: int, stream: bool = False, out: TextIO | None = None) -> None:
        self.total = total
        self.index = 0
        self.stream = stream
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._head = ""  # "[3/8] train lora lr=2e-4 ..." of the running stage
        self._line_open = False  # the head was printed without its newline
        self._last_update = 0.0

    def _prefix(self) -> str:
        self.index += 1
        return f"[{self.index}/{self.total}]"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def line(self, description: str, status: str) -> None:
        self._write(f"{self._prefix()} {description} ... {status}\n")

    def start(self, description: str, log: Path) -> None:
        # With streaming, the stage's own output follows, so the start gets a line of its own.
        self._head = f"{self._prefix()} {description}"
        self._write(f"{self._head} (log: {log}) ..." + ("\n" if self.stream else ""))
        self._line_open = not self.stream
        self._last_update = time.monotonic()

    def update(self, status: str) -> None:
        """The running stage's progress: redrawn in place on a terminal, else a line every LOG_INTERVAL_S."""
        now = time.monotonic()
        if self.stream or now - self._last_update < (TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S):
            return
        self._last_update = now
        if self.tty:
            width = shutil.get_terminal_size((120, 24)).columns - 1  # a wrapped line cannot be redrawn with \r
            self._write(f"\r{self._head} ... {status}"[: width + 1] + "\x1b[K")
        else:
            self._write(("\n" if self._line_open else "") + f"{self._head} ... {status}\n")
            self._line_open = False

    def _end(self, status: str) -> None:
        if self.stream:
            self._write(f"[{self.index}/{self.total}] ... {status}\n")
        elif self.tty:
            self._write(f"\r{self._head} ... {status}\x1b[K\n")
        elif self._line_open:
            self._write(f" {status}\n")
        else:  # progress lines came in between: repeat the stage, so each stage still ends on its own line
            self._write(f"{self._head} ... {status}\n")
        self._line_open = False

    def line_end(self, status: str) -> None:
        """End the running stage's line with ``status`` (a stage that ended without failing the study)."""
        print(f" {status}" if not self.stream else f"[{self.index}/{self.total}] ... {status}", flush=True)

    def fail(self) -> None:
        self._end("failed")

    def finish(self, seconds: float) -> None:
        self._end(f"done in {format_duration(seconds)}")
