"""Running one study stage as a subprocess: its output appended to a log (and echoed on request), Ctrl-C and
SIGTERM passed on so the stage stops cleanly, and a failure reported with the log's last lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mathsft.errors import UserError
from mathsft.progress import StageOutputParser

LOG_TAIL_LINES = 15


class StageFailed(UserError):
    """A stage's process exited with an error; ``code`` is its exit code (3: the training diverged)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-20000:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with \r: keep the last state of each.
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    # Indented: the stage's own "error: ..." line is quoted, so the study's failure stays the one line that starts so.
    return "\n".join(f"  | {line}" for line in kept[-lines:])


def run_logged(
    command: list[str],
    log_path: Path,
    display: list[str],
    echo: bool = False,
    on_status: Callable[[str], None] | None = None,
) -> None:
    """Run ``command``, appending its stdout and stderr to ``log_path`` (and the console with ``echo``).

    ``on_status`` gets the stage's progress read from its output (``step 12/40, loss 1.93, ETA 1 min 05 s``,
    ``generated 120/500 answers``; see :class:`mathsft.progress.StageOutputParser`) whenever it changes.

    On Ctrl-C the child gets the same SIGINT (same process group): training saves a checkpoint, evaluation keeps
    its finished batches; we wait for it to stop, then re-raise. A SIGTERM to the study (a scheduler preempting the
    job) is passed on to the child as SIGINT, for the same clean stop. A failure prints the log's tail and raises.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    terminated = False
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(display)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        stdout = process.stdout
        assert stdout is not None

        parser = StageOutputParser()
        last_status: str | None = None

        def pump() -> None:
            nonlocal last_status
            for chunk in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                if on_status is not None:
                    parser.feed(chunk)
                    status = parser.status()
                    if status is not None and status != last_status:
                        last_status = status
                        on_status(status)

        def on_sigterm(signum: int, frame: Any) -> None:
            nonlocal terminated
            terminated = True
            process.send_signal(signal.SIGINT)

        try:
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread
            previous = None
        try:
            pump()
            code = process.wait()
        except KeyboardInterrupt:
            print("\ninterrupted: letting the stage stop cleanly (Ctrl-C again to kill it)", file=sys.stderr)
            try:
                pump()
                process.wait()
            except KeyboardInterrupt:
                process.kill()
            print("rerun the same command to resume the study", file=sys.stderr)
            raise
        finally:
            if process.poll() is None:  # an unexpected error here: never leave the child running
                process.kill()
                process.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if terminated:
        print("terminated: rerun the same command to resume the study", file=sys.stderr)
        raise KeyboardInterrupt
    if code != 0:
        tail = _tail(log_path)
        if tail:
            print(f"\n----- last lines of {log_path} -----\n{tail}\n-----", file=sys.stderr)
        raise StageFailed(f"'{' '.join(display[:3])} ...' failed with exit code {code}; full log: {log_path}", code)


