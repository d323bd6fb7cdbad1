"""The learnable smoke task (assets/smoke-task, made by scripts/make_smoke_task.py): the committed data is what the
generator makes, train and test are disjoint and correct, the base model knows the domain but not the answer
format, and (slow) the smoke study shows fine-tuning raising accuracy by at least 30 points."""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from mathsft.grading import extract_boxed_answer

sys.path.insert(0, str(REPO / "scripts"))
import make_smoke_task  # noqa: E402

TASK = REPO / "assets" / "smoke-task"
FIELDS = {"problem", "solution", "answer", "subject", "level", "unique_id"}


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (TASK / "data" / f"{split}.jsonl").read_text().splitlines()]


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _independent_answer(problem: str) -> int:
    """The answer computed from the problem text alone, without the generator."""
    if problem.startswith("Solve for $x$"):
        if problem.count("x") == 3:  # "Solve for $x$: $ax + b = ex + d$."
            a, b, e, d = _numbers(problem)
            assert (d - b) % (a - e) == 0, problem
            return (d - b) // (a - e)
        a, b, c = _numbers(problem)
        assert (c - b) % a == 0, problem
        return (c - b) // a
    a, b = _numbers(problem)
    if "remainder" in problem:
        return a % b
    if "greatest common divisor" in problem:
        return math.gcd(a, b)
    if " + " in problem:
        return a + b
    if " - " in problem:
        return a - b
    assert "\\cdot" in problem, problem
    return a * b


def test_committed_data_is_what_the_generator_makes() -> None:
    train, test, _ = make_smoke_task.make_data(make_smoke_task.NUM_TRAIN, make_smoke_task.NUM_TEST)
    for split, rows in (("train", train), ("test", test)):
        expected = "".join(json.dumps(row) + "\n" for row in rows)
        assert (TASK / "data" / f"{split}.jsonl").read_text() == expected, f"rerun scripts/make_smoke_task.py ({split})"


def test_train_and_test_are_disjoint_and_well_formed() -> None:
    train, test = _rows("train"), _rows("test")
    assert len(test) >= 200
    assert not {row["problem"] for row in train} & {row["problem"] for row in test}
    for rows in (train, test):
        assert len({row["problem"] for row in rows}) == len(rows)
        assert len({row["unique_id"] for row in rows}) == len(rows)
        for row in rows:
            assert set(row) == FIELDS
            assert row["subject"] in make_smoke_task.SUBJECTS and row["level"] in make_smoke_task.LEVELS
            assert row["answer"] == str(_independent_answer(row["problem"])), row
            assert extract_boxed_answer(row["solution"]) == row["answer"], row
            assert row["solution"].endswith(f"The answer is $\\boxed{{{row['answer']}}}$.")
    # Every subject at every level, so the per-subject and per-level tables have something in each row.
    cells = Counter((row["subject"], row["level"]) for row in test)
    assert len(cells) == len(make_smoke_task.SUBJECTS) * len(make_smoke_task.LEVELS)
    assert min(cells.values()) >= 8


def test_pretraining_text_is_plain_and_holds_no_test_problem() -> None:
    test = _rows("test")
    _, _, test_keys = make_smoke_task.make_data(make_smoke_task.NUM_TRAIN, make_smoke_task.NUM_TEST)
    corpus = make_smoke_task.make_corpus(20_000, test_keys)
    text = "\n".join(corpus)
    for marker in ("\\boxed", "<|im_start|>", "<|im_end|>", "Please reason"):
        assert marker not in text, marker
    questions = tuple(row["problem"] for row in test)
    # A single equation such as $4 + 9 = 13$ or $24 = 3 \\cdot 8 + 0$ is a fact that other problems and the tables
    # also state; the worked lines of a longer test problem are not in the text, alone or after a question or an
    # aside (a GCD chain may still end like a test problem's: Euclid's tail).
    works = {row["solution"].split(" The answer is")[0] for row in test}
    works = {work for work in works if work.count("=") > 1}
    after = tuple(sep + work for work in works for sep in ("? ", ". "))
    passages = [re.sub(r" The answer is \$\d+\$\.$", "", passage) for passage in corpus]
    lines = {line for passage in passages for line in passage.split("\n")}
    assert not any(line.startswith(questions) for line in lines)
    assert not any(line in works or line.endswith(after) for line in lines)


def test_base_model_knows_the_domain_but_not_the_format() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathsft.template import render_generation_prompt

    assert (TASK / "model" / "model.safetensors").stat().st_size < 8 * 2**20
    tokenizer = AutoTokenizer.from_pretrained(TASK / "model")
    model = AutoModelForCausalLM.from_pretrained(TASK / "model", dtype=torch.float32).eval()
    assert model.config.model_type == "qwen3"
    assert tokenizer.tokenize("4096")[:4] == ["4", "0", "9", "6"]  # one token per digit, as in Qwen3
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id

    problems = [row for row in _rows("test") if row["level"] == 1][:24]
    tokenizer.padding_side = "left"

    def complete(prompts: list[str]) -> list[str]:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=48, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    # Plain text: it works the problem out (the answer is the last number of its first line of work).
    plain = complete([row["problem"] for row in problems])
    first_lines = [text.strip().split("\n")[0] for text in plain]
    solved = sum(_numbers(line)[-1:] == [int(row["answer"])] for line, row in zip(first_lines, problems, strict=True))
    assert solved >= len(problems) // 2, plain
    # Chat prompt of the course: it never boxes an answer.
    chat = complete([render_generation_prompt(tokenizer, row["problem"]) for row in problems])
    assert not any("\\boxed" in text for text in chat), chat


@pytest.mark.slow
def test_smoke_study_fine_tuning_beats_base_by_30_points(tmp_path: Path) -> None:
    study = tmp_path / "study"
    result = run_cli("run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(study), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    def accuracy(name: str) -> float:
        summary = json.loads((study / "eval" / name / "summary.json").read_text())
        assert summary["num_problems"] == len(_rows("test"))
        return summary["accuracy"]

    base = accuracy("base")
    assert base <= 0.05
    for method in ("adamw", "lora"):
        assert accuracy(method) - base >= 0.30, (method, accuracy(method), base)
