"""Rebuild the study report from finished runs: study dirs, training run dirs and/or evaluation dirs.

    python make_report.py runs/study-smoke --output report/
    python make_report.py runs/study-* --output reports/      # several studies: one report each, reports/<study>/
    python make_report.py runs/smoke-adamw runs/smoke-sgd runs/eval/base --output report/ --log_scale

A study dir contributes train/* and eval/* (eval/base is the base model, eval/<method> that method's best run; with
seeds eval/<method>-seed<s>, and checkpoints eval/<method>[-seed<s>]-step<N>, named by their stage_config.json).
A report never mixes two studies: several study dirs get one report each, and study dirs mixed with other dirs are
refused. See docs/study.md for how evaluation dirs given on their own are matched to runs.
"""

from __future__ import annotations

import argparse

from mathsft.errors import exit_on_user_error
from mathsft.report import write_reports


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="study dirs, training run dirs or evaluation dirs")
    parser.add_argument("--output", default="report", help="report folder (default: report/)")
    parser.add_argument("--log_scale", action="store_true", help="log-scale loss axes")
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for report in write_reports(args.sources, args.output, log_scale=args.log_scale):
        print(f"report: {report}")


if __name__ == "__main__":
    main()
