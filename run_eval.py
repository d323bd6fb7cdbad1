"""Evaluate a model (or a LoRA adapter) on MATH-500, or re-grade existing completions.

    python run_eval.py --model Qwen/Qwen3-0.6B-Base --output runs/eval/base
    python run_eval.py --model Qwen/Qwen3-0.6B-Base --adapter runs/qwen3-0.6b-base-lora --output runs/eval/lora
    python run_eval.py --model runs/qwen3-0.6b-base-adamw --num_samples 8 --temperature 0.7 --output runs/eval/adamw-s8
    python run_eval.py grade --input generations.jsonl --output scored.jsonl

Rerunning the same command resumes. See docs/evaluation.md.
"""

from __future__ import annotations

import json
import sys

from trl import TrlParser

from mathsft.errors import exit_on_user_error
from mathsft.evaluation import EvalArguments, GradeArguments, run_evaluation, run_grading


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade"]:
        (grade_args,) = TrlParser(GradeArguments, prog="run_eval.py grade").parse_args_and_config(argv[1:])
        summary = run_grading(grade_args)
        # Machine-readable summary: always the last line of stdout.
        print(json.dumps(summary, ensure_ascii=False))
        return
    (eval_args,) = TrlParser(EvalArguments).parse_args_and_config(argv)
    run_evaluation(eval_args)


if __name__ == "__main__":
    main()
