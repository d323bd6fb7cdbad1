"""Bad inputs, round 2 (issue 16, items 4-8): each is one ``error:`` line (exit 2) or a stated cap, never a
traceback, a silent merge or a wrong label.

- summaries of the wrong types are ``corrupt: <file>: <field>`` in make_report.py and run_study.py;
- an adapter folder given as ``--model``: its base is part of the evaluation's identity, and the report labels it by
  the adapter, not as ``base``;
- YAML: duplicate keys (naming both lines), alias bombs, values of the wrong type (lists included), and parser errors
  that name the key;
- ``run_eval.py grade``: ids as written, repeated (id, sample) pairs, the output written only after validation, a
  string ``gold``;
- bounds: ``--max_new_tokens`` (the model's context), ``--grader_workers`` (the CPUs), ``--grader_timeout``.

Cheap cases run in the default suite; every case that generates, or starts a study, is ``slow``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_safety import _CACHE, TINY_EVAL, assert_unchanged, expect, refused, rows_of, run, snapshot, write_jsonl

import make_report
from conftest import REPO, SMOKE_DATA, SMOKE_MODEL
from mathsft import artifacts, evaluation
from mathsft.config_files import load_yaml_mapping
from mathsft.errors import UserError
from mathsft.results import collect
from summary_factory import eval_summary, graded_rows, run_summary, write_eval, write_json


@pytest.fixture(scope="module", autouse=True)
def _hash_cache(tmp_path_factory) -> None:
    """The scripts' weight-hash cache goes to a test folder (test_safety's ``run`` reads it from here)."""
    _CACHE["dir"] = tmp_path_factory.mktemp("xdg-cache")


def _one_line_refusal(capsys, call: Any, message: str) -> str:
    """An entry point's ``main`` called in-process: exit 2 and one ``error:`` line naming ``message``."""
    with pytest.raises(SystemExit) as info:
        call()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], err
    return lines[0]


# ---- 4. summaries are checked on read ------------------------------------------------------------------------------


def _study(tmp_path: Path) -> Path:
    study = tmp_path / "study"
    write_json(study / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw"))
    write_eval(study / "eval/base", eval_summary(0.25), graded_rows([True, False, False, False]))
    write_eval(study / "eval/adamw", eval_summary(0.5), graded_rows([True, True, False, False]), run="adamw-lr1e-5")
    return study


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``data`` with the value at a dotted path (``epochs.0.tokens``) replaced."""
    data = copy.deepcopy(data)  # the factory's epoch lists are shared
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    node: Any = data
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return data


CORRUPT_RUNS = [
    ("eval_loss", [[10, "0.8"]]),  # a loss as text
    ("eval_loss", [[10]]),  # a point without its loss
    ("train_loss", {"5": 1.2}),
    ("hyperparameters.learning_rate", "1e-5"),
    ("hyperparameters", ["adamw"]),
    ("epochs.0.tokens", "many"),
    ("epochs", [1, 2]),
    ("interrupted", "no"),
    ("trainable_params", 10**12),  # more than total_params
]
CORRUPT_EVALS = [
    ("accuracy", "50%"),
    ("accuracy_ci95", [0.1]),
    ("by_subject.Algebra.count", "2"),
    ("by_level.1", {"accuracy": 1.0}),  # a group without its count
    ("num_problems", None),
    ("generation", "greedy"),
]


@pytest.mark.parametrize(("field", "value"), CORRUPT_RUNS, ids=[f for f, _ in CORRUPT_RUNS])
def test_report_names_a_corrupt_run_summary(tmp_path, capsys, field, value):
    study = _study(tmp_path)
    path = study / "train/adamw-lr1e-5/run_summary.json"
    path.write_text(json.dumps(_set(run_summary("adamw"), field, value)))
    before = snapshot(tmp_path)
    line = _one_line_refusal(capsys, lambda: make_report.main([str(study), "--output", str(tmp_path / "report")]),
                             f"corrupt: {path}: ")  # fmt: skip
    assert field.split(".")[0] in line or "trainable_params" in line
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.parametrize(("field", "value"), CORRUPT_EVALS, ids=[f for f, _ in CORRUPT_EVALS])
def test_report_names_a_corrupt_eval_summary(tmp_path, capsys, field, value):
    study = _study(tmp_path)
    path = study / "eval/adamw/summary.json"
    path.write_text(json.dumps(_set(eval_summary(0.5), field, value)))
    line = _one_line_refusal(capsys, lambda: make_report.main([str(study), "--output", str(tmp_path / "report")]),
                             f"corrupt: {path}: ")  # fmt: skip
    assert field.split(".")[0] in line


def test_a_loose_corrupt_eval_is_named_too(tmp_path, capsys):
    loose = tmp_path / "my-eval"
    write_eval(loose, eval_summary(0.5))
    (loose / "summary.json").write_text(json.dumps(eval_summary(0.5) | {"adapter": 5}))
    _one_line_refusal(capsys, lambda: make_report.main([str(loose), "--output", str(tmp_path / "report")]),
                      "adapter")  # fmt: skip


def test_a_summary_that_is_not_an_object_is_corrupt_and_a_torn_one_missing(tmp_path, capsys):
    study = _study(tmp_path)
    path = study / "train/adamw-lr1e-5/run_summary.json"
    path.write_text("[1, 2]\n")
    _one_line_refusal(capsys, lambda: make_report.main([str(study), "--output", str(tmp_path / "report")]),
                      f"corrupt: {path}: expected a JSON object, got list")  # fmt: skip
    path.write_text('{"method": "adamw", "eval_lo')  # a crash mid-write: the run is reported as unfinished
    make_report.main([str(study), "--output", str(tmp_path / "report")])
    assert "adamw-lr1e-5" in (tmp_path / "report" / "report.md").read_text()


def test_report_script_refuses_a_corrupt_summary(tmp_path):
    """Through the real script: one line, exit 2, nothing written."""
    study = _study(tmp_path)
    path = study / "train/adamw-lr1e-5/run_summary.json"
    path.write_text(json.dumps(run_summary("adamw") | {"eval_loss": "low"}))
    refused(["make_report.py", str(study), "--output", str(tmp_path / "report")], f"corrupt: {path}: eval_loss",
            tmp_path)  # fmt: skip


def test_valid_summaries_still_report(tmp_path, capsys):
    study = _study(tmp_path)
    make_report.main([str(study), "--output", str(tmp_path / "report")])
    assert (tmp_path / "report" / "report.md").is_file()
    assert artifacts.summary_problems(run_summary("lora", cuda=False), artifacts.RunSummary) == []


@pytest.mark.slow
def test_study_refuses_a_corrupt_run_summary_before_writing(tmp_path):
    """A finished stage of this very study whose run_summary.json holds a wrong type: refused in one line naming
    the file and the field, before the study writes anything."""
    from mathsft.study import Study
    from mathsft.study_config import parse_study_args

    study_dir = tmp_path / "study"
    args = ["--config", "studies/smoke.yaml", "--study_dir", str(study_dir), "--methods", "adamw"]
    cwd = os.getcwd()
    os.chdir(REPO)  # the smoke config names its recipes relative to the checkout
    try:
        study = Study(parse_study_args(args))
        stage = study.train_stage(study.runs[0])
    finally:
        os.chdir(cwd)
    write_json(stage.directory / "stage_config.json", stage.record)
    write_json(stage.directory / "run_summary.json", run_summary("adamw") | {"eval_loss": [[2, "nan?"]]})
    refused(["run_study.py", *args], f"corrupt: {stage.directory / 'run_summary.json'}: eval_loss", tmp_path)


# ---- 5. an adapter folder given as --model ---------------------------------------------------------------------


def _adapter(folder: Path, base: str) -> Path:
    """An adapter folder as PEFT saves it (the weights are not read here)."""
    write_json(folder / "adapter_config.json", {"base_model_name_or_path": base, "peft_type": "LORA", "r": 2})
    (folder / "adapter_model.safetensors").write_bytes(b"adapter weights")
    return folder


def test_adapter_as_model_names_its_base_in_the_identity(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(SMOKE_MODEL, base)
    adapter = _adapter(tmp_path / "lora-run", str(base))
    args = evaluation.EvalArguments(model=str(adapter), output=str(tmp_path / "eval"), dataset=str(SMOKE_DATA))
    settings = evaluation.eval_settings(args, "float32")
    assert settings["adapter_base"]["name"] == str(base)
    assert settings["adapter_base"]["weights"]["sha256"]
    (base / "model.safetensors").write_bytes(b"other weights")  # another base under the same path
    assert evaluation.eval_settings(args, "float32")["adapter_base"] != settings["adapter_base"]
    # A full model keeps its identity as before: no new key.
    plain = evaluation.EvalArguments(model=str(SMOKE_MODEL), output="x", dataset=str(SMOKE_DATA))
    assert "adapter_base" not in evaluation.eval_settings(plain, "float32")


def test_adapter_as_model_with_a_missing_base_is_one_line(tmp_path):
    adapter = _adapter(tmp_path / "lora-run", str(tmp_path / "gone" / "model"))
    with pytest.raises(UserError, match="base_model_name_or_path"):
        evaluation.adapter_base(str(adapter))


def test_report_labels_an_adapter_as_model_by_the_adapter(tmp_path):
    adapter = _adapter(tmp_path / "lora-run", str(SMOKE_MODEL))
    loose = tmp_path / "evals" / "eval-1"
    write_eval(loose, eval_summary(0.5, model=str(adapter), adapter=None))
    write_json(loose / "eval_config.json", {"model": str(adapter), "adapter": None,
                                            "adapter_base": {"name": str(SMOKE_MODEL)}})  # fmt: skip
    base = tmp_path / "evals" / "base-eval"
    write_eval(base, eval_summary(0.25, model=str(SMOKE_MODEL)))
    _, evals = collect([loose, base])
    assert sorted(e.label for e in evals) == ["base", "lora-run"]
    # Its adapter a listed training run: named by that run's method, as an --adapter evaluation is.
    run_dir = tmp_path / "runs" / "lora-lr1e-4"
    write_json(run_dir / "run_summary.json", run_summary("lora"))
    write_eval(loose, eval_summary(0.5, model=str(run_dir), adapter=None))
    write_json(loose / "eval_config.json", {"model": str(run_dir), "adapter_base": {"name": str(SMOKE_MODEL)}})
    _, evals = collect([run_dir, loose, base])
    assert sorted((e.label, e.run) for e in evals) == [("base", None), ("lora", "lora-lr1e-4")]


@pytest.mark.slow
def test_run_eval_of_an_adapter_as_model(tmp_path):
    """Evaluated as its base with the adapter merged; another base under the same path is another evaluation."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(SMOKE_MODEL, base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False))
    adapter = tmp_path / "lora-run"
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    output = tmp_path / "eval"
    command = ["run_eval.py", "--model", str(adapter), "--dataset", str(SMOKE_DATA), "--output", str(output),
               *TINY_EVAL]  # fmt: skip
    expect(run(*command), 0)
    recorded = json.loads((output / "eval_config.json").read_text())
    assert recorded["adapter_base"]["name"] == str(base)
    shutil.copytree(REPO / "assets" / "smoke-task" / "model", base, dirs_exist_ok=True)  # other base weights
    refused(command, "adapter_base", output)
    _, evals = collect([output])
    assert [e.label for e in evals] == ["lora-run"]


# ---- 6. YAML: duplicate keys, alias bombs, types -------------------------------------------------------------------

BOMB = "\n".join(
    [f'a0: &a0 [{", ".join(["lol" * 30] * 9)}]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    + ["lora_target_modules: *a9", ""]
)


def test_alias_bomb_is_refused_in_under_a_second(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert 1000 < len(BOMB.encode()) < 2000  # the classic "billion laughs": 10^9 strings from about 1.4 KB
    started = time.perf_counter()
    with pytest.raises(UserError, match="alias"):
        load_yaml_mapping(str(path), "recipe")
    assert time.perf_counter() - started < 1.0


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("methods: &m [adamw, *m]\n")
    with pytest.raises(UserError, match="alias"):
        load_yaml_mapping(str(path), "study config")


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("learning_rate: 1.0e-3\nseed: 1\nlearning_rate: 1.0e-2\n", "learning_rate", "lines 1 and 3"),
        ("evaluation:\n  limit: 4\n  max_new_tokens: 8\n  limit: 8\n", "limit", "lines 2 and 4"),  # nested
        ("recipes: {adamw: a.yaml, adamw: b.yaml}\n", "adamw", "lines 1 and 1"),  # flow style
    ],
    ids=["top-level", "nested", "flow"],
)
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path, text, key, lines):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_yaml_mapping(str(path), "recipe")
    assert f"duplicate key '{key}'" in str(info.value) and lines in str(info.value)


def test_repo_configs_still_load():
    for path in sorted([*REPO.glob("recipes/*/*.yaml"), *REPO.glob("studies/*.yaml")]):
        assert load_yaml_mapping(str(path), "config") == yaml.safe_load(path.read_text()), path


def _smoke_recipe(tmp_path: Path, changes: dict[str, Any], base: str = "lora") -> str:
    data = yaml.safe_load((REPO / "recipes" / "smoke" / f"{base}.yaml").read_text()) | changes
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


RECIPE_TYPES = [
    ({"lora_target_modules": 5}, "lora_target_modules"),
    ({"lora_target_modules": [1, 2]}, "lora_target_modules"),
    ({"lora_target_modules": [["q_proj"]]}, "lora_target_modules"),
    ({"lora_target_modules": {"q_proj": 1}}, "lora_target_modules"),
    ({"report_to": ["tensorboard", 5]}, "report_to"),
    ({"learning_rate": [1.0e-3]}, "learning_rate"),
    ({"per_device_train_batch_size": 2.5}, "per_device_train_batch_size"),
    ({"bf16": 3}, "bf16"),
    ({"dataset_name": 5}, "dataset_name"),
    ({"lr_scheduler_type": "cosinus"}, "lr_scheduler_type"),  # the dataclass's own error names the key
    ({"lr_scheduler_type": 5}, "lr_scheduler_type"),
]


@pytest.mark.parametrize(("changes", "key"), RECIPE_TYPES, ids=[k + str(i) for i, (_, k) in enumerate(RECIPE_TYPES)])
def test_recipe_values_of_the_wrong_type_name_the_key(tmp_path, changes, key):
    from mathsft.recipes import parse_training_args

    with pytest.raises(UserError) as info:
        parse_training_args(["--config", _smoke_recipe(tmp_path, changes)])
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


STUDY_TYPES = [
    ({"methods": [["adamw"]]}, "methods"),
    ({"methods": {"adamw": 1}}, "methods"),
    ({"lora_ranks": [[8]]}, "lora_ranks"),
    ({"lora_ranks": {"r": 8}}, "lora_ranks"),
    ({"learning_rates": {"sgd": [[0.1]]}}, "learning_rates"),
    ({"learning_rates": [0.1, 0.3]}, "learning_rates"),
    ({"train_overrides": {"lora_target_modules": 5}}, "lora_target_modules"),
    ({"evaluation": {"max_new_tokens": [48]}}, "max_new_tokens"),
    ({"evaluation": {"max_new_tokens": "48"}}, "max_new_tokens"),
    ({"evaluation": {"limit": True}}, "limit"),
]


@pytest.mark.parametrize(("changes", "key"), STUDY_TYPES, ids=[k + str(i) for i, (_, k) in enumerate(STUDY_TYPES)])
def test_study_values_of_the_wrong_type_name_the_key(tmp_path, monkeypatch, changes, key):
    from mathsft.study_config import parse_study_args

    monkeypatch.chdir(REPO)
    data = yaml.safe_load((REPO / "studies" / "smoke.yaml").read_text()) | changes
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as info:
        parse_study_args(["--config", str(path)])
    assert key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_train_script_refuses_a_duplicate_key(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text((REPO / "recipes/smoke/adamw.yaml").read_text() + "\nlearning_rate: 1.0\n")
    lines = len((REPO / "recipes/smoke/adamw.yaml").read_text().splitlines())
    refused(["train_sft.py", "--config", str(path), "--output_dir", str(tmp_path / "run")],
            f"duplicate key 'learning_rate' (lines {_line_of(path, 'learning_rate:')} and {lines + 2})", tmp_path)


def _line_of(path: Path, prefix: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if line.startswith(prefix))


@pytest.mark.slow
def test_study_script_refuses_an_alias_bomb_at_once(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(BOMB.replace("lora_target_modules", "methods"))
    result = refused(["run_study.py", "--config", str(path), "--study_dir", str(tmp_path / "study")], "alias",
                     tmp_path)  # fmt: skip
    assert result.seconds < 60


# ---- 7. grading input ------------------------------------------------------------------------------------------


def _grade(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[list[str], Path]:
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    return ["run_eval.py", "grade", "--input", str(source), "--output", str(tmp_path / "out.jsonl")], source


def test_grade_keeps_ids_as_written(tmp_path):
    """``1`` and ``1.0`` (and ``"1"``) are three problems, not one problem with three samples."""
    args, _ = _grade(tmp_path, [{"id": 1, "completion": "\\boxed{4}", "gold": "4"},
                                {"id": 1.0, "completion": "\\boxed{5}", "gold": "4"},
                                {"id": "1", "completion": "\\boxed{4}", "gold": "4"}])  # fmt: skip
    result = expect(run(*args), 0)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["num_problems"], summary["num_samples"]) == (3, 1)
    assert [row["id"] for row in rows_of(tmp_path / "out.jsonl")] == [1, 1.0, "1"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param([{"id": 3, "sample": 0, "completion": "\\boxed{4}", "gold": "4"},
                      {"id": 3, "sample": 0, "completion": "\\boxed{5}", "gold": "4"}],
                     "line 2 repeats id 3, sample 0 of line 1", id="repeated-pair"),  # fmt: skip
        pytest.param([{"completion": "\\boxed{4}", "gold": 4}], "'gold' must be a string", id="number-gold"),
        pytest.param([{"id": 0, "sample": 0, "completion": "\\boxed{4}", "gold": "4"},
                      {"id": 0, "sample": 1, "completion": "\\boxed{4}", "gold": "4"},
                      {"id": 1, "sample": 0, "completion": "\\boxed{4}", "gold": "4"}],
                     "different numbers of samples", id="uneven-samples"),  # fmt: skip
    ],
)
@pytest.mark.slow
def test_grade_refuses_before_writing_any_output(tmp_path, rows, message):
    args, _ = _grade(tmp_path, rows)
    refused(args, message, tmp_path)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": 3, "sample": 0, "completion": "a", "gold": "4"}, {"id": 3, "sample": 0, "completion": "b",
                                                                    "gold": "4"}], "line 2 repeats id 3, sample 0"),
        ([{"id": 0, "sample": 0, "completion": "\\boxed{4}", "gold": "4"},
          {"id": 0, "sample": 1, "completion": "\\boxed{4}", "gold": "4"},
          {"id": 1, "sample": 0, "completion": "\\boxed{4}", "gold": "4"}], "different numbers of samples"),
        ([{"completion": "a", "gold": ["4"]}], "'gold' must be a string"),
    ],
    ids=["repeated-pair", "uneven-samples", "list-gold"],
)
def test_grade_main_writes_nothing_for_a_refused_input(tmp_path, capsys, rows, message):
    import run_eval

    args, source = _grade(tmp_path, rows)
    before = snapshot(tmp_path)
    _one_line_refusal(capsys, lambda: run_eval.main(args[1:]), message)
    assert_unchanged(before, snapshot(tmp_path))


def test_grade_row_check_in_process():
    row = {"completion": "x", "gold": 4.0}
    with pytest.raises(UserError, match="'gold' must be a string"):
        evaluation._check_grade_row(row, 1, "in.jsonl")
    with pytest.raises(UserError, match="repeats id 1.0, sample 0"):
        evaluation._check_unique_pairs([{"id": 1.0, "sample": 0}, {"id": 1.0, "sample": 0}], "in.jsonl")
    evaluation._check_unique_pairs([{"id": 1, "sample": 0}, {"id": 1.0, "sample": 0}], "in.jsonl")  # two problems


# ---- 8. bounds -----------------------------------------------------------------------------------------------------


def test_max_new_tokens_is_capped_at_the_context(capsys):
    assert evaluation.capped_max_new_tokens(100_000, 2048, 300) == 1748
    assert evaluation.capped_max_new_tokens(1024, 2048, 300) == 1024
    assert evaluation.capped_max_new_tokens(100_000, None, 300) == 100_000  # a model that does not say
    err = capsys.readouterr().err
    assert err.count("--max_new_tokens 100000 is capped at 1748") == 1 and "error" not in err
    with pytest.raises(UserError, match="fills the model's context"):
        evaluation.capped_max_new_tokens(8, 256, 256)


def test_grader_workers_are_capped_at_the_cpus(capsys):
    cpus = len(os.sched_getaffinity(0))
    assert evaluation.cap_grader_workers(10**6) == cpus
    assert evaluation.cap_grader_workers(1) == 1 and evaluation.cap_grader_workers(None) is None
    assert capsys.readouterr().err.count(f"capped at {cpus}") == 1


@pytest.mark.parametrize("timeout", ["601", "1e9", "86400"])
def test_grader_timeout_has_a_maximum(timeout):
    with pytest.raises(UserError, match="--grader_timeout must be at most 600"):
        evaluation.validate_grader_timeout(timeout, key="--grader_timeout")
    with pytest.raises(UserError, match="grader_timeout"):
        evaluation.eval_args_from_mapping({"grader_timeout": float(timeout)}, "a study")


@pytest.mark.slow
def test_grade_script_caps_workers_and_refuses_a_huge_timeout(tmp_path):
    args, _ = _grade(tmp_path, [{"completion": "\\boxed{4}", "gold": "4"}])
    result = expect(run(*args, "--grader_workers", "100000"), 0)
    assert result.stderr.count("--grader_workers 100000 is capped at") == 1
    refused([*args, "--grader_timeout", "1e9"], "--grader_timeout", tmp_path)


@pytest.mark.slow
def test_run_eval_caps_max_new_tokens_once(tmp_path):
    """A model whose context is only a little longer than the prompts: generation stops at the context, said once."""
    model = tmp_path / "model"
    shutil.copytree(SMOKE_MODEL, model)
    config = json.loads((model / "config.json").read_text())
    from transformers import AutoTokenizer

    from mathsft.template import render_generation_prompt

    tokenizer = AutoTokenizer.from_pretrained(model)
    problems = [json.loads(line)["problem"] for line in (SMOKE_DATA / "test.jsonl").read_text().splitlines()[:2]]
    longest = max(len(tokenizer(render_generation_prompt(tokenizer, p, None), add_special_tokens=False).input_ids)
                  for p in problems)  # fmt: skip
    config["max_position_embeddings"] = longest + 6
    (model / "config.json").write_text(json.dumps(config))
    output = tmp_path / "eval"
    args = ["run_eval.py", "--model", str(model), "--dataset", str(SMOKE_DATA), "--output", str(output),
            *TINY_EVAL, "--max_new_tokens", "100000"]  # fmt: skip
    result = expect(run(*args), 0)
    assert result.stderr.count("--max_new_tokens 100000 is capped at 6") == 1, result.tail()
    assert all(row["num_tokens"] <= 6 for row in rows_of(output / "generations.jsonl"))
