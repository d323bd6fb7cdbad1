"""Bad inputs, round 2 (issue 16, items 9 and 10): one ``error: ...`` line and exit 2, never a traceback, for

- a chat template that cannot render (jinja ``TemplateSyntaxError``, ``SecurityError``, ``UndefinedError``, a
  template's ``raise_exception``, any other error it raises), in training and in evaluation;
- LoRA target modules that match no module of the model;
- a data set too small to split into train and validation;
- model, adapter or checkpoint files that are not plain tensors (a pickle, a damaged safetensors file), also when
  resuming;
- a ``report_dir`` (``--output`` of make_report.py) that is a file;
- training on the test set: the test split itself, the test file, or problems shared with the test split by
  normalised text (refused unless ``--allow_test_overlap true``), in train_sft.py and in a study's pre-checks.

The default suite calls the entry points' ``main`` in this process (one import for all cases); the same cases
through real subprocesses, with checksums of every file around them, and the cases that train are ``slow``.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_safety import _hash_cache, assert_unchanged, expect, refused, run, snapshot, summary, write_jsonl

import make_report
import run_eval
import run_study
import train_sft
from conftest import REAL_DATA, SMOKE_TASK_DATA, SMOKE_TASK_MODEL
from mathsft.data import normalize_problem, read_column, refuse_test_overlap, shared_problems
from mathsft.errors import UserError
from summary_factory import eval_summary, write_eval

__all__ = ["_hash_cache"]  # the weight-hash cache of the subprocesses goes to a test folder (test_safety's fixture)

TRAIN = ["--config", "recipes/smoke/adamw.yaml", "--max_steps", "1", "--max_train_samples", "8", "--max_eval_samples",
         "4", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none"]  # fmt: skip
LORA = ["--config", "recipes/smoke/lora.yaml", *TRAIN[2:]]
EVAL = ["--dataset", str(SMOKE_TASK_DATA), "--limit", "2", "--max_new_tokens", "2", "--batch_size", "1",
        "--no_progress"]  # fmt: skip

TEMPLATES = {
    "syntax": ("{% if %}broken", "TemplateSyntaxError"),
    "security": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    "raise": ("{{ raise_exception('this template refuses') }}", "this template refuses"),
    "undefined": ("{{ no_such_variable.attribute }}", "UndefinedError"),
    "python-error": ("{{ 1 // 0 }}", "ZeroDivisionError"),
}


class Evil:
    """A pickled object that runs code when unpickled: ``weights_only`` loading must refuse it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this ran while loading weights",))


def fails(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str], message: str) -> str:
    """``main(argv)`` exits 2 with exactly one ``error:`` line naming ``message``, and no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert exc.value.code == 2, captured.err[-2000:]
    assert "Traceback" not in captured.err + captured.out
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
    return errors[0]


def model_copy(folder: Path, drop_weights: bool = False) -> Path:
    ignore = shutil.ignore_patterns("model.safetensors") if drop_weights else None
    shutil.copytree(SMOKE_TASK_MODEL, folder, ignore=ignore)
    return folder


def model_with_template(folder: Path, template: str) -> Path:
    model = model_copy(folder)
    (model / "chat_template.jinja").write_text(template)
    return model


def pickled_weights_model(folder: Path) -> Path:
    """A model folder whose only weights are a torch file holding a Python object instead of tensors."""
    model = model_copy(folder, drop_weights=True)
    torch.save({"model.embed_tokens.weight": Evil()}, model / "pytorch_model.bin")
    return model


def corrupt_safetensors_model(folder: Path) -> Path:
    model = model_copy(folder)
    data = bytearray((model / "model.safetensors").read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header is no longer UTF-8
    (model / "model.safetensors").write_bytes(bytes(data))
    return model


def rows(split: str, count: int | None = None) -> list[dict[str, Any]]:
    lines = (SMOKE_TASK_DATA / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


def respaced(problem: str) -> str:
    """The same problem as another copy might write it: other case, spacing and LaTeX spacing commands."""
    return "  " + problem.upper().replace(" ", " \\, ").replace("$", " $ ") + "\n"


def overlapping_data(folder: Path, shared: int = 2) -> Path:
    """A train/test folder whose training split holds ``shared`` test problems, written differently."""
    train, test = rows("train", 60), rows("test", 20)
    for index in range(shared):
        copied = dict(test[index])
        copied["problem"] = respaced(copied["problem"])
        train.insert(7 * index + 3, copied)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test)
    return folder


# ---- 9. one line instead of a traceback (in this process: the default suite) ------------------------------------


def slow_except(*fast: str, among: list[str]) -> list[Any]:
    """Parameters of which only ``fast`` run in the default suite (the others take the same path)."""
    return [value if value in fast else pytest.param(value, marks=pytest.mark.slow) for value in among]


@pytest.mark.parametrize("kind", slow_except("syntax", "security", among=sorted(TEMPLATES)))
def test_training_with_a_failing_chat_template(tmp_path, capsys, kind):
    template, message = TEMPLATES[kind]
    model = model_with_template(tmp_path / "model", template)
    fails(train_sft.main, [*TRAIN, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out")],
          capsys, message)  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["syntax", "security", "raise"])
def test_evaluation_with_a_failing_chat_template(tmp_path, capsys, kind):
    template, message = TEMPLATES[kind]
    model = model_with_template(tmp_path / "model", template)
    line = fails(run_eval.main, ["--model", str(model), *EVAL, "--output", str(tmp_path / "eval")], capsys, message)
    assert "chat template" in line
    assert not (tmp_path / "eval").exists()  # refused before the evaluation recorded anything


def test_training_template_that_fails_on_one_example(tmp_path, capsys):
    """A template that renders the first examples but raises on one row names that row."""
    template = (SMOKE_TASK_MODEL / "chat_template.jinja").read_text()
    poison = "{%- for m in messages %}{%- if 'POISON' in m.content %}{{ raise_exception('poisoned row') }}" \
             "{%- endif %}{%- endfor %}"  # fmt: skip
    model = model_with_template(tmp_path / "model", poison + template)
    data = rows("train", 40)
    data[5]["problem"] = "POISON " + data[5]["problem"]
    write_jsonl(tmp_path / "data" / "train.jsonl", data)
    line = fails(train_sft.main, [*TRAIN, "--model_name_or_path", str(model), "--dataset_name",
                                  str(tmp_path / "data"), "--output_dir", str(tmp_path / "out")], capsys,
                 "poisoned row")  # fmt: skip
    assert data[5]["unique_id"] in line


@pytest.mark.parametrize(
    ("targets", "named"),
    [
        (["qq_proj", "vv_proj"], "'qq_proj', 'vv_proj'"),
        pytest.param(["q_proj", "vv_prj"], "'vv_prj'", marks=pytest.mark.slow),  # PEFT would skip it silently
        pytest.param(["nothing"], "'nothing'", marks=pytest.mark.slow),  # one name: TRL passes it as a string
    ],
)
def test_lora_targets_that_match_nothing(tmp_path, capsys, targets, named):
    line = fails(train_sft.main, [*LORA, "--lora_target_modules", *targets, "--output_dir", str(tmp_path / "out")],
                 capsys, named)  # fmt: skip
    assert "q_proj" in line and "down_proj" in line  # the real linear modules are listed
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("count", "fraction"), [(1, "0.1"), (5, "0.99"), (2, "0.9")], ids=["one-row", "no-train-row", "no-train-row-2"]
)
def test_data_too_small_to_split(tmp_path, capsys, count, fraction):
    data = write_jsonl(tmp_path / "small.jsonl", rows("train", count))
    fails(train_sft.main, [*TRAIN, "--dataset_name", str(data), "--validation_fraction", fraction, "--output_dir",
                           str(tmp_path / "out")], capsys, "too few to split")  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["pickle", "safetensors"])
def test_weights_that_are_not_plain_tensors(tmp_path, capsys, damage):
    make = pickled_weights_model if damage == "pickle" else corrupt_safetensors_model
    model = make(tmp_path / "model")
    before = snapshot(model)
    fails(train_sft.main, [*TRAIN, "--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out")],
          capsys, "not plain tensors")  # fmt: skip
    fails(run_eval.main, ["--model", str(model), *EVAL, "--output", str(tmp_path / "eval")], capsys,
          "not plain tensors")  # fmt: skip
    assert_unchanged(before, snapshot(model))
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()


def test_adapter_weights_that_are_not_plain_tensors(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
              "base_model_name_or_path": str(SMOKE_TASK_MODEL)}  # fmt: skip
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    torch.save({"base_model.model.lm_head.weight": Evil()}, adapter / "adapter_model.bin")
    fails(run_eval.main, ["--model", str(SMOKE_TASK_MODEL), "--adapter", str(adapter), *EVAL, "--output",
                          str(tmp_path / "eval")], capsys, "not plain tensors")  # fmt: skip


def test_report_dir_that_is_a_file(tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("the user's own file\n")
    study = tmp_path / "study"
    fails(run_study.main, ["--config", "studies/smoke.yaml", "--study_dir", str(study), "--report_dir", str(report)],
          capsys, "report_dir")  # fmt: skip
    fails(run_study.main, ["--config", "studies/smoke.yaml", "--study_dir", str(study), "--report_dir",
                           str(report / "inside")], capsys, "is a file")  # fmt: skip
    write_eval(tmp_path / "eval-base", eval_summary())  # a valid source: only the report folder is wrong
    fails(make_report.main, [str(tmp_path / "eval-base"), "--output", str(report)], capsys, "is a file")
    assert report.read_text() == "the user's own file\n" and not study.exists()


# ---- 10. contamination guard (in this process: the default suite) ------------------------------------------------


def test_normalised_problem_text():
    assert normalize_problem("What is  $\\frac{1}{2}\\,+\\left( x \\right)$?") == normalize_problem(
        "what is $\\frac{1}{2} + (x)$?\n"
    )
    assert normalize_problem("Find $x$.") != normalize_problem("Find $y$.")
    assert normalize_problem("$a \\leftarrow b$") != normalize_problem("$a arrow b$")  # \left only as a command


def test_overlap_check_is_fast_on_the_full_sizes():
    rng = random.Random(0)
    train = [f"Problem {i}: what is ${rng.randint(0, 10**9)} + {i}$?" for i in range(12_000)]
    test = [f"Problem t{i}: what is ${rng.randint(0, 10**9)} - {i}$?" for i in range(499)] + [train[1234].upper()]
    started = time.perf_counter()
    assert shared_problems(train, test) == [1234]
    assert time.perf_counter() - started < 1.0


def test_real_data_has_no_overlap():
    """MATH train (12,000) and MATH-500 test share no problem today: training on ../shared/data/math500 passes."""
    if not (REAL_DATA / "train.jsonl").is_file() or not (REAL_DATA / "test.jsonl").is_file():
        pytest.skip(f"real data not present at {REAL_DATA}")
    train = read_column(REAL_DATA / "train.jsonl", "problem")
    assert len(train) == 12_000
    started = time.perf_counter()
    assert refuse_test_overlap(train, "math500 (train)", str(REAL_DATA), "problem", allow=False) == 0
    assert time.perf_counter() - started < 5.0
    with pytest.raises(UserError, match="also in the test set"):  # and the check does see its own test split
        refuse_test_overlap([*train, read_column(REAL_DATA / "test.jsonl", "problem")[7]], "x", str(REAL_DATA),
                            "problem", allow=False)  # fmt: skip


def test_training_on_the_test_split_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    fails(train_sft.main, [*TRAIN, "--dataset_train_split", "test", "--output_dir", out], capsys,
          "--allow_test_overlap")  # fmt: skip
    fails(train_sft.main, [*TRAIN, "--dataset_name", str(SMOKE_TASK_DATA / "test.jsonl"), "--output_dir", out],
          capsys, "test set")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_training_on_problems_of_the_test_split_is_refused(tmp_path, capsys):
    data = overlapping_data(tmp_path / "data")
    before = snapshot(data)
    line = fails(train_sft.main, [*TRAIN, "--dataset_name", str(data), "--output_dir", str(tmp_path / "out")], capsys,
                 "2 training problems are also in the test set")  # fmt: skip
    assert "--allow_test_overlap true" in line and "row 4" in line
    # A single training file finds the test file beside it.
    fails(train_sft.main, [*TRAIN, "--dataset_name", str(data / "train.jsonl"), "--output_dir", str(tmp_path / "out")],
          capsys, "also in the test set")  # fmt: skip
    assert_unchanged(before, snapshot(data))
    assert not (tmp_path / "out").exists()


STUDY = ["--config", "studies/smoke.yaml", "--dry_run", "true"]


def test_study_evaluating_on_training_data_is_refused(tmp_path, capsys):
    study = ["--study_dir", str(tmp_path / "study")]
    line = fails(run_study.main, [*STUDY, *study, "--evaluation", '{"split": "train"}'], capsys, "test set")
    assert "--allow_test_overlap true" in line
    data = overlapping_data(tmp_path / "data")
    shutil.copy(SMOKE_TASK_DATA / "train.jsonl", data / "train.jsonl")  # the recipes' own training problems ...
    write_jsonl(data / "test.jsonl", [*rows("test", 10), *rows("train", 3)])  # ... three of them in the evaluation
    fails(run_study.main, [*STUDY, *study, "--evaluation", json.dumps({"dataset": str(data)})], capsys,
          "3 training problems are also in the test set")  # fmt: skip
    # The override, for every run of the study: the plan goes ahead.
    run_study.main([*STUDY, *study, "--evaluation", '{"split": "train"}', "--train_overrides",
                    '{"allow_test_overlap": true}'])  # fmt: skip
    assert "error:" not in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


# ---- the same through real subprocesses, with checksums of everything around them (slow) -------------------------


def _template_case(tmp: Path) -> list[str]:
    model = model_with_template(tmp / "model", TEMPLATES["security"][0])
    return ["train_sft.py", *TRAIN, "--model_name_or_path", str(model), "--output_dir", str(tmp / "out")]


def _eval_template_case(tmp: Path) -> list[str]:
    model = model_with_template(tmp / "model", TEMPLATES["syntax"][0])
    return ["run_eval.py", "--model", str(model), *EVAL, "--output", str(tmp / "eval")]


def _lora_case(tmp: Path) -> list[str]:
    return ["train_sft.py", *LORA, "--lora_target_modules", "attn_q", "attn_v", "--output_dir", str(tmp / "out")]


def _small_case(tmp: Path) -> list[str]:
    data = write_jsonl(tmp / "data" / "train.jsonl", rows("train", 1))
    return ["train_sft.py", *TRAIN, "--dataset_name", str(data.parent), "--output_dir", str(tmp / "out")]


def _pickle_train_case(tmp: Path) -> list[str]:
    model = pickled_weights_model(tmp / "model")
    return ["train_sft.py", *TRAIN, "--model_name_or_path", str(model), "--output_dir", str(tmp / "out")]


def _pickle_eval_case(tmp: Path) -> list[str]:
    model = pickled_weights_model(tmp / "model")
    return ["run_eval.py", "--model", str(model), *EVAL, "--output", str(tmp / "eval")]


def _overlap_case(tmp: Path) -> list[str]:
    data = overlapping_data(tmp / "data", shared=1)
    return ["train_sft.py", *TRAIN, "--dataset_name", str(data), "--output_dir", str(tmp / "out")]


def _test_split_case(tmp: Path) -> list[str]:
    return ["train_sft.py", *TRAIN, "--dataset_train_split", "test", "--output_dir", str(tmp / "out")]


def _study_case(tmp: Path) -> list[str]:
    return ["run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(tmp / "study"), "--evaluation",
            '{"split": "train"}']  # fmt: skip


def _study_report_case(tmp: Path) -> list[str]:
    (tmp / "report").write_text("not a folder\n")
    return ["run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(tmp / "study"), "--report_dir",
            str(tmp / "report")]  # fmt: skip


SUBPROCESS_CASES = {
    "train-template-security-error": (_template_case, "SecurityError"),
    "eval-template-syntax-error": (_eval_template_case, "TemplateSyntaxError"),
    "lora-targets-match-nothing": (_lora_case, "'attn_q', 'attn_v'"),
    "one-row-data-set": (_small_case, "too few to split"),
    "train-pickled-weights": (_pickle_train_case, "not plain tensors"),
    "eval-pickled-weights": (_pickle_eval_case, "not plain tensors"),
    "train-overlap-with-test": (_overlap_case, "1 training problem is also in the test set"),
    "train-on-test-split": (_test_split_case, "--allow_test_overlap true"),
    "study-evaluates-training-data": (_study_case, "test set"),
    "study-report-dir-is-a-file": (_study_report_case, "report_dir"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_refused_in_one_line_through_the_scripts(tmp_path, case):
    make, message = SUBPROCESS_CASES[case]
    args = make(tmp_path)
    refused(args, message, tmp_path, SMOKE_TASK_MODEL, SMOKE_TASK_DATA)


@pytest.mark.slow
def test_allow_test_overlap_trains_and_is_recorded(tmp_path):
    data = overlapping_data(tmp_path / "data")
    output = tmp_path / "out"
    result = expect(run("train_sft.py", *TRAIN, "--dataset_name", str(data), "--allow_test_overlap", "true",
                        "--output_dir", str(output)), 0)  # fmt: skip
    assert "also in the test set" in result.stdout + result.stderr  # said, not silent
    assert summary(output)["data"]["allow_test_overlap"] is True
    identity = json.loads((output / "run_identity.json").read_text())
    assert "allow_test_overlap" not in identity["data"]  # it permits the run; it does not change what it trains


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_pickles_is_refused(tmp_path):
    """A checkpoint whose optimizer state was replaced by a pickle (its marker updated to match) is refused in one
    line before anything is loaded or written, whether named or found by ``--resume_from_checkpoint true``."""
    output = tmp_path / "run"
    steps = ["--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"]
    expect(run("train_sft.py", *TRAIN, *steps, "--output_dir", str(output)), 0)
    (output / "run_summary.json").unlink()  # as if it had crashed after its last checkpoint
    checkpoint = output / "checkpoint-2"
    with open(checkpoint / "optimizer.pt", "wb") as handle:
        pickle.dump({"state": Evil()}, handle)
    marker = json.loads((checkpoint / "mathsft_checkpoint.json").read_text())
    marker["files"]["optimizer.pt"] = (checkpoint / "optimizer.pt").stat().st_size
    (checkpoint / "mathsft_checkpoint.json").write_text(json.dumps(marker))
    for resume in ("true", str(checkpoint)):
        result = refused(["train_sft.py", *TRAIN, *steps, "--output_dir", str(output), "--resume_from_checkpoint",
                          resume], "optimizer.pt", tmp_path)  # fmt: skip
        assert "this ran while loading weights" not in result.stdout + result.stderr
