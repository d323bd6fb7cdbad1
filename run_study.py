"""Run the whole optimizer study: train AdamW, SGD and LoRA (with their learning-rate grids, and seeds), evaluate the
base model and each method's best run(s) on MATH-500, and write the report.

    python run_study.py --config studies/qwen3-0.6b-base.yaml
    python run_study.py --config studies/smoke.yaml                 # tiny model, CPU, offline, a few minutes
    python run_study.py --config studies/smoke.yaml --dry_run true  # print the plan and the commands
    python run_study.py --config studies/smoke.yaml --seeds '[1, 2]' --eval_checkpoints true
                                                  # every rate once per seed; accuracy of every checkpoint
    python run_study.py --help                                      # the main options; --help_all: every one

Rerunning the same command skips finished stages and resumes interrupted ones. See docs/study.md.
"""

from __future__ import annotations

from mathsft.errors import exit_on_user_error
from mathsft.study import parse_study_args, run_study


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    run_study(parse_study_args(argv))


if __name__ == "__main__":
    main()
