"""The study's live progress: the stage-output parser on captured logs of a smoke training and a smoke evaluation,
the console line on a terminal and in a log file, and run_logged passing the progress of a real child process."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from mathsft import progress as progress_module
from mathsft.progress import Progress, StageOutputParser, parse_clock
from mathsft.stage_process import run_logged

DATA = Path(__file__).parent / "data"


def _statuses(text: bytes, chunk: int) -> list[str]:
    """Feed ``text`` in chunks of ``chunk`` bytes (bars and dicts get cut anywhere); the distinct statuses."""
    parser, seen = StageOutputParser(), []
    for start in range(0, len(text), chunk):
        parser.feed(text[start : start + chunk])
        status = parser.status()
        if status is not None and (not seen or seen[-1] != status):
            seen.append(status)
    return seen


@pytest.mark.parametrize("chunk", [1, 7])
def test_training_log(chunk: int) -> None:
    """A smoke training stage's output (8 steps, logging every step, validation at each epoch end), cut anywhere."""
    seen = _statuses((DATA / "train_stage.log").read_bytes(), chunk)
    assert seen[0] == "step 0/8"
    assert "step 1/8, loss 6.661, ETA 1.0 s" in seen  # the first {'loss': ...} dict, and tqdm's remaining time
    assert "step 4/8, loss 6.167, validating 0/1" in seen  # the Trainer's nested validation bar
    assert "step 4/8, loss 6.167, ETA 0.0 s" in seen  # ... and back to training when it closes
    assert seen[-1] == "step 8/8, loss 5.743"  # the last logged loss, not train_loss or eval_loss
    steps = [int(s.split()[1].split("/")[0]) for s in seen]
    assert steps == sorted(steps)  # never a step from another bar (loading weights, tokenizing, writing shards)


def test_evaluation_log() -> None:
    seen = _statuses((DATA / "eval_stage.log").read_bytes(), 3)
    assert seen == ["generated 0/12 answers", "generated 8/12 answers, ETA 0.0 s", "generated 12/12 answers"]


@pytest.mark.parametrize(("log", "final"), [("train_stage.log", "step 8/8, loss 5.743"),
                                            ("eval_stage.log", "generated 12/12 answers")])  # fmt: skip
def test_whole_log_at_once(log: str, final: str) -> None:
    assert _statuses((DATA / log).read_bytes(), 1 << 20) == [final]


def test_long_stage_bars() -> None:
    parser = StageOutputParser()
    parser.feed("\r 28%|██▊       | 120/430 [01:10<03:02,  1.70it/s]\r{'loss': '0.8231', 'grad_norm': '1.2'}\n")
    assert parser.status() == "step 120/430, loss 0.8231, ETA 3 min 02 s"
    parser.feed("\r 30%|███       | 130/430 [01:16<1:02:05,  1.70it/s]")
    assert parser.status() == "step 120/430, loss 0.8231, ETA 3 min 02 s"  # the segment is not finished yet
    parser.feed("\r")
    assert parser.status() == "step 130/430, loss 0.8231, ETA 1 h 02 min"
    assert parse_clock("1:02:05") == 3725 and parse_clock("?") is None
    assert StageOutputParser().status() is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_console_in_a_log_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: at most one progress line per LOG_INTERVAL_S, and each stage still ends on a line of its
    own that says [i/n] ... done."""
    now, out = _clock(monkeypatch), io.StringIO()
    progress = Progress(2, out=out)
    progress.start("train adamw lr=1e-5", Path("s/stage.log"))
    for second in range(0, 95, 5):
        now[0] = 1000.0 + second
        progress.update(f"step {second}/100")
    progress.finish(95.0)
    progress.start("eval base", Path("e/stage.log"))
    progress.update("generated 1/500 answers")  # within the interval: not shown
    progress.finish(3.0)
    assert out.getvalue().splitlines() == [
        "[1/2] train adamw lr=1e-5 (log: s/stage.log) ...",
        "[1/2] train adamw lr=1e-5 ... step 30/100",
        "[1/2] train adamw lr=1e-5 ... step 60/100",
        "[1/2] train adamw lr=1e-5 ... step 90/100",
        "[1/2] train adamw lr=1e-5 ... done in 1 min 35 s",
        "[2/2] eval base (log: e/stage.log) ... done in 3.0 s",
    ]


def test_console_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    now, out = _clock(monkeypatch), _Terminal()
    progress = Progress(1, out=out)
    progress.start("train sgd lr=0.02", Path("s/stage.log"))
    now[0] += 1
    progress.update("step 3/40, loss 2.1, ETA 12.0 s")
    progress.update("step 4/40, loss 2.0, ETA 11.0 s")  # redrawn at most every TTY_INTERVAL_S
    now[0] += 1
    progress.fail()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\r[1/1] train sgd lr=0.02 ... failed\x1b[K\n")
    assert "\r[1/1] train sgd lr=0.02 ... step 3/40, loss 2.1, ETA 12.0 s\x1b[K" in text and "step 4/40" not in text


CHILD = r"""
import sys, time
for step in range(1, 4):
    sys.stderr.write(f"\r{step * 33}%|###       | {step}/3 [00:0{step}<00:0{3 - step},  1.00it/s]")
    sys.stderr.flush()
    print("{'loss': '%.1f', 'epoch': '1'}" % (3 - step), flush=True)
    time.sleep(0.05)
sys.stderr.write("\n")
"""


def test_run_logged_reports_the_child_progress(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "stage.log"
    run_logged([sys.executable, "-c", CHILD], log, ["python", "child.py"], on_status=seen.append)
    assert seen[-1] == "step 3/3, loss 0.0"
    assert "step 2/3, loss 1.0, ETA 1.0 s" in seen or "step 2/3, loss 2.0, ETA 1.0 s" in seen
    assert "3/3 [00:03<00:00" in log.read_text()  # the log keeps the raw output
