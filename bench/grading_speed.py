"""Grading speed: answers per second of ``mathsft.grading.grade_many`` on 3,000 MATH rows, this checkout against a
baseline commit, in the same run.

Usage::

    python -m bench.grading_speed --baseline_ref 597e4f1 [--data ../shared/data/math500/train.jsonl]
        [--rows 3000] [--repeats 2] [--num_workers 2] [--output_dir DIR]

The rows are the first ``rows`` MATH solutions: the first half graded against their own answer (decided by the
string match), the second half against the next problem's answer (most go to math-verify). Each grader (the
baseline's ``mathsft`` package, exported with ``git archive``, and this checkout's) runs in its own fresh Python
process, alternately, ``repeats`` times each; the table keeps every run and the best one per grader. It writes
``grading_speed.json`` and ``grading_speed.md`` to ``--output_dir`` (default: a new folder under ``runs/bench/``).
CPU timings on a shared machine are indicative only: compare numbers of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "math500" / "train.jsonl"

# Run in a child process whose PYTHONPATH points at one grader: prints {"seconds", "correct", "statuses"}.
_CHILD = """
import json, resource, sys, time
from mathsft.grading import grade_many
items = json.load(open(sys.argv[1], encoding="utf-8"))
start = time.perf_counter()
results = grade_many([tuple(item) for item in items], timeout_s=float(sys.argv[2]), num_workers=int(sys.argv[3]))
seconds = time.perf_counter() - start
# CPU seconds of this process and of its (finished, waited-for) grading workers: less sensitive to the machine's load.
own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu_s = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
statuses = {}
for r in results:
    statuses[r.status] = statuses.get(r.status, 0) + 1
correct = sum(r.correct for r in results)
print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "correct": correct, "statuses": statuses}))
"""


def build_items(data: Path, rows: int) -> list[tuple[str, str]]:
    """Half own-answer rows, half rows graded against the next problem's answer."""
    with data.open(encoding="utf-8") as f:
        records = [json.loads(line) for _, line in zip(range(rows + 1), f, strict=False)]
    if len(records) < rows + 1:
        raise SystemExit(f"error: {data} has fewer than {rows + 1} rows")
    half = rows // 2
    items = [(r["solution"], r["answer"]) for r in records[:half]]
    items += [(records[i]["solution"], records[i + 1]["answer"]) for i in range(half, rows)]
    return items


def export_baseline(ref: str, into: Path) -> Path:
    """The ``mathsft`` package of commit ``ref``, written under ``into``; returns the folder to put on PYTHONPATH."""
    archive = subprocess.run(["git", "archive", ref, "mathsft"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def time_grader(package_root: Path, items_file: Path, timeout_s: float, num_workers: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(package_root), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(items_file), str(timeout_s), str(num_workers)],
        env=env, capture_output=True, text=True, check=True, cwd=package_root,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Grading speed ({report['rows']} rows, indicative CPU timings)",
        "",
        f"{report['when']}, {report['machine']}, {report['num_workers']} workers, load average before the runs "
        f"{report['load_average_before']}. Rows: {report['rows'] // 2} solutions against their own answer, "
        f"{report['rows'] - report['rows'] // 2} against the next problem's answer ({report['data']}).",
        "",
        "| grader | run | wall s | answers/s (wall) | CPU s | answers per CPU s | correct | statuses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        lines.append(
            f"| {run['grader']} | {run['run']} | {run['seconds']:.2f} | {run['answers_per_s']:.0f} "
            f"| {run['cpu_s']:.1f} | {run['answers_per_cpu_s']:.0f} | {run['correct']} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(run['statuses'].items()))} |"
        )
    lines += ["", "Best run per grader: " + ", ".join(f"{k} {v:.0f} answers/s" for k, v in report["best"].items())]
    lines += ["", "Best per CPU second: " + ", ".join(f"{k} {v:.0f}" for k, v in report["best_per_cpu_s"].items())]
    lines += ["", "CPU timings on a shared machine: indicative only; compare numbers of the same run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline_ref", required=True, help="git commit whose grader is the baseline")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--timeout_s", type=float, default=5.0)
    parser.add_argument("--output_dir", default="")
    args = parser.parse_args(argv)

    from mathsft.artifacts import write_json_atomic, write_text_atomic

    items = build_items(Path(args.data), args.rows)
    stamp = time.strftime("%Y-%m-%d_%H%M", time.gmtime())
    out_dir = Path(args.output_dir) if args.output_dir else REPO / "runs" / "bench" / f"grading_speed_{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "rows": len(items), "num_workers": args.num_workers, "data": args.data,
        "baseline_ref": args.baseline_ref, "runs": [], "best": {}, "best_per_cpu_s": {}, "indicative": True,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        items_file = Path(tmp) / "items.json"
        items_file.write_text(json.dumps(items), encoding="utf-8")
        graders = {f"baseline {args.baseline_ref}": export_baseline(args.baseline_ref, Path(tmp) / "baseline"),
                   "this checkout": REPO}  # fmt: skip
        for run in range(1, args.repeats + 1):
            for name, root in graders.items():
                result = time_grader(root, items_file, args.timeout_s, args.num_workers)
                result.update(grader=name, run=run, answers_per_s=len(items) / result["seconds"])
                result["answers_per_cpu_s"] = len(items) / result["cpu_s"]
                report["runs"].append(result)
                speed = result["answers_per_s"]
                cpu = result["answers_per_cpu_s"]
                print(f"{name} run {run}: {result['seconds']:.2f} s, {speed:.0f}/s, {cpu:.0f}/CPU s", flush=True)
                report["best"][name] = max(report["best"].get(name, 0.0), result["answers_per_s"])
                report["best_per_cpu_s"][name] = max(report["best_per_cpu_s"].get(name, 0.0), cpu)
    write_json_atomic(out_dir / "grading_speed.json", report)
    write_text_atomic(out_dir / "grading_speed.md", markdown(report))
    print(f"wrote {out_dir}/grading_speed.json and .md")


if __name__ == "__main__":
    main()
