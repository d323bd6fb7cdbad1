# Copyright 2025 The mathsft authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Accuracy of MATH-style completions: the last \\boxed{} answer, compared with math-verify under a time bound."""

from collections import Counter

import datasets
import evaluate

# `evaluate` copies this script into its modules cache before importing it, so the grader is imported as an
# installed/importable package rather than by relative path.
from mathsft.grading import STATUSES, grade_many

_CITATION = """\
@article{hendrycksmath2021,
  title={Measuring Mathematical Problem Solving With the MATH Dataset},
  author={Dan Hendrycks and Collin Burns and Saurav Kadavath and Akul Arora and Steven Basart and Eric Tang
          and Dawn Song and Jacob Steinhardt},
  journal={NeurIPS},
  year={2021}
}
"""

_DESCRIPTION = """\
Grades model completions on MATH-style problems. The predicted answer is the content of the last complete
\\boxed{...} (or \\fbox{...}) in the completion, or, when the completion ends in several boxes separated only by
connective text ("$\\boxed{-2}$ and $\\boxed{1}$"), those parts taken together; a completion without a box is wrong
("no_box"). The answer is compared with the reference answer by a normalized string match, then by math-verify
(symbolic / numeric equivalence, intervals and inequalities both ways, sets, tuples, matrices, equations, units and
degree signs ignored). All of it, extraction included, runs in worker processes with a hard time limit per answer,
so pathological completions cannot hang the evaluation.
The rules are those of `mathsft.grading` (see docs/grading.md in the mathsft repository).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): model completions, each expected to hold its final answer in \\boxed{...}.
    references (`list` of `str`): reference answers (the bare answer, e.g. "\\frac{1}{2}", not a full solution).
    timeout_s (`float`, defaults to 5.0): time limit for grading one completion; slower ones count as wrong.
    num_workers (`int`, *optional*): number of grading processes (defaults to the number of CPUs).
Returns:
    accuracy (`float`): fraction of predictions graded correct.
    num_samples (`int`): number of predictions.
    correct, incorrect, no_box, timeout, error (`int`): number of predictions with each grading status.
Examples:
    >>> metric = evaluate.load("metrics/math_boxed_accuracy")
    >>> metric.compute(predictions=["so $x = \\\\boxed{\\\\dfrac{1}{2}}$"], references=["0.5"])["accuracy"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MathBoxedAccuracy(evaluate.Metric):
    """Boxed-answer accuracy on MATH-style problems."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                }
            ),
            reference_urls=["https://github.com/huggingface/Math-Verify", "https://github.com/hendrycks/math"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        timeout_s: float = 5.0,
        num_workers: int | None = None,
    ) -> dict[str, float | int]:
        results = grade_many(
            list(zip(predictions, references, strict=True)), timeout_s=timeout_s, num_workers=num_workers
        )
        counts = Counter(r.status for r in results)
        n = len(results)
        out: dict[str, float | int] = {
            "accuracy": sum(r.correct for r in results) / n if n else 0.0,
            "num_samples": n,
        }
        out.update({status: counts.get(status, 0) for status in STATUSES})
        return out
