"""The epoch table: one full epoch per method through the user's own command (train_sft.py with the real recipes),
read back from each run's ``run_summary.json`` (the project's own callback figures, ``mathsft.callbacks``).

    python bench/epoch_table.py --runs_dir /tmp/epochs --methods adamw,sgd,lora --output_dir bench/results/<run>

``--runs_dir`` holds one folder per method (the run's ``--output_dir``), each with the ``command.txt`` and
``command_status.txt`` (``<exit code> <wall seconds>``) that ``bench/run_gpu.sh`` writes beside the run. Writes
``epoch_runs.json`` (every summary, the command and its status) and ``epoch_table.md``, atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the project's own packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import parse_names, utc_timestamp
from mathsft.artifacts import RunSummary, read_run_summary, schema_problems, write_json_atomic, write_text_atomic
from mathsft.errors import exit_on_user_error
from mathsft.methods import METHOD_NAMES

EPOCH_JSON = "epoch_runs.json"
EPOCH_MD = "epoch_table.md"
COMMAND_FILE = "command.txt"
STATUS_FILE = "command_status.txt"
EXIT_TIMEOUT = 124  # what `timeout` returns when it stopped the command
# The target for AdamW's fast recipe on an H200: one epoch in at most this many seconds.
ADAMW_EPOCH_TARGET_S = 75.0


def read_status(run_dir: Path) -> tuple[int | None, float | None]:
    """(exit code, wall seconds) of the command, from ``command_status.txt``; (None, None) when missing."""
    try:
        code, wall = (run_dir / STATUS_FILE).read_text().split()[:2]
        return int(code), float(wall)
    except (OSError, ValueError):
        return None, None


# Each method's folder holds the command, its log and its exit status, and the training run itself in run/.
RUN_SUBDIR = "run"


def collect_run(method: str, run_dir: Path) -> dict[str, Any]:
    """One method's record: its command, exit status, run summary (None if missing) and its first full epoch."""
    exit_code, wall = read_status(run_dir)
    command = (run_dir / COMMAND_FILE).read_text().strip() if (run_dir / COMMAND_FILE).is_file() else None
    summary = read_run_summary(run_dir / RUN_SUBDIR)
    problems = schema_problems(summary, RunSummary) if summary is not None else ["no run_summary.json"]
    epochs: list[dict[str, Any]] = list(summary.get("epochs", [])) if summary else []  # type: ignore[arg-type]
    complete = [e for e in epochs if e.get("complete") and not e.get("resumed_mid_epoch")]
    return {
        "method": method,
        "run_dir": str(run_dir),
        "command": command,
        "exit_code": exit_code,
        "command_wall_s": wall,
        "summary_problems": problems,
        "epoch": complete[0] if complete else None,
        "summary": summary,
    }


def _status(record: dict[str, Any]) -> str:
    if record["epoch"] is not None and not record["summary_problems"]:
        return "ok"
    if record["exit_code"] == EXIT_TIMEOUT:
        return f"timed out after {record['command_wall_s']:.0f} s"
    if record["exit_code"] not in (None, 0):
        return f"failed (exit code {record['exit_code']})"
    if record["exit_code"] is None and record["summary"] is None:
        return "not run (no time left)"
    return "; ".join(record["summary_problems"]) or "no complete epoch"


def _cell(value: Any, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def _row(record: dict[str, Any]) -> str:
    epoch, summary = record["epoch"] or {}, record["summary"] or {}
    cells = [
        record["method"],
        _cell(epoch.get("wall_time_s"), ".1f"),
        _cell(epoch.get("global_step"), "d"),
        _cell(epoch.get("tokens"), ",d"),
        _cell(epoch.get("tokens_per_s"), ",.0f"),
        _cell(epoch.get("peak_memory_allocated_gib"), ".2f"),
        _cell(epoch.get("peak_memory_reserved_gib"), ".2f"),
        _cell(summary.get("total_time_s"), ".1f"),
        _cell(record["command_wall_s"], ".1f"),
        _status(record),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(records: list[dict[str, Any]]) -> str:
    first = next((r["summary"] for r in records if r["summary"]), None) or {}
    versions = first.get("versions", {})
    lines = [
        "# One epoch per method (train_sft.py, real recipes)",
        "",
        f"{first.get('device_name', 'unknown device')}, written {utc_timestamp()}; torch {versions.get('torch', '?')}, "
        f"transformers {versions.get('transformers', '?')}, trl {versions.get('trl', '?')}.",
        "",
        "| method | epoch wall s | steps | tokens | tokens/s | peak alloc GiB | peak reserved GiB | run total s | "
        "command s | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *[_row(r) for r in records],
        "",
        "- From each run's `run_summary.json` (`epochs[0]`, the project's PerfCallback): epoch wall time without "
        "evaluation, training tokens (non-padding), peak CUDA memory allocated/reserved during the epoch.",
        "- run total s: `total_time_s` of the summary (data preparation, model loading and saving included); "
        "command s: the whole command (interpreter start-up included).",
    ]
    adamw = next((r for r in records if r["method"] == "adamw" and r["epoch"]), None)
    if adamw is not None and "H200" in first.get("device_name", ""):
        wall = adamw["epoch"]["wall_time_s"]
        verdict = "met" if wall <= ADAMW_EPOCH_TARGET_S else "missed"
        lines.append(f"- AdamW target, one epoch <= {ADAMW_EPOCH_TARGET_S:.0f} s on an H200: {verdict} ({wall:.1f} s).")
    return "\n".join(lines) + "\n"


def write_epoch_table(runs_dir: Path, methods: list[str], output_dir: Path) -> list[dict[str, Any]]:
    records = [collect_run(method, runs_dir / method) for method in methods]
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / EPOCH_JSON, {"written": utc_timestamp(), "runs": records})
    write_text_atomic(output_dir / EPOCH_MD, markdown(records))
    return records


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collect one-epoch run summaries into the epoch table.")
    parser.add_argument("--runs_dir", required=True, help="Folder with one run folder per method.")
    parser.add_argument(
        "--methods", default=",".join(METHOD_NAMES), help="Comma-separated methods (rows in registry order)."
    )
    parser.add_argument("--output_dir", required=True, help="Where epoch_runs.json and epoch_table.md go.")
    args = parser.parse_args(argv)
    methods = parse_names(args.methods, METHOD_NAMES, "--methods")
    records = write_epoch_table(Path(args.runs_dir), methods, Path(args.output_dir))
    print(markdown(records))


if __name__ == "__main__":
    main()
