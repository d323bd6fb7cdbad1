"""Evaluate a model (or a LoRA adapter) on MATH-500, or re-grade existing completions.

    python run_eval.py --model Qwen/Qwen3-0.6B-Base --output runs/eval/base
    python run_eval.py --model Qwen/Qwen3-0.6B-Base --adapter runs/qwen3-0.6b-base-lora --output runs/eval/lora
    python run_eval.py --model runs/qwen3-0.6b-base-adamw --num_samples 8 --temperature 0.7 --output runs/eval/adamw-s8
    python run_eval.py grade --input runs/eval/base/generations.jsonl   # writes generations.scored.jsonl beside it
    python run_eval.py --help                                           # the main options; --help_all: every one

Rerunning the same command resumes. See docs/evaluation.md.
"""

from __future__ import annotations

import json
import sys

from mathsft.cli import parse_command_line
from mathsft.errors import exit_on_user_error
from mathsft.evaluation import EvalArguments, GradeArguments, run_evaluation, run_grading
from mathsft.help_pages import EVAL_HELP, GRADE_HELP
from mathsft.hub import offline_if_unreachable

PROG = "run_eval.py"


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:
        (grade_args,), _ = parse_command_line((GradeArguments,), argv[1:], GRADE_HELP, f"{PROG} grade", "options file")
        summary = run_grading(grade_args)
        # Machine-readable summary: always the last line of stdout.
        print(json.dumps(summary, ensure_ascii=False))
        return
    (eval_args,), _ = parse_command_line((EvalArguments,), argv, EVAL_HELP, PROG, "options file")
    offline_if_unreachable([eval_args.model, eval_args.dataset])
    run_evaluation(eval_args)


if __name__ == "__main__":
    main()
