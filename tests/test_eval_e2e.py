"""run_eval.py end to end on the tiny smoke model, as a user runs it: outputs, resume, sampling, re-grading, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import run_eval
from conftest import SMOKE_DATA, SMOKE_MODEL, run_cli
from mathsft.artifacts import EvalSummary, schema_problems
from mathsft.evaluation import _INTERRUPT_ENV
from mathsft.generation import load_tokenizer
from mathsft.template import render_generation_prompt

BASE = ["run_eval.py", "--model", str(SMOKE_MODEL), "--dataset", str(SMOKE_DATA), "--no_progress"]
GREEDY = [*BASE, "--limit", "6", "--max_new_tokens", "16"]
ROW_FIELDS = {
    "id", "unique_id", "subject", "level", "sample", "prompt", "completion", "pred", "gold", "correct", "status",
    "rule", "finish_reason", "num_tokens",
}  # fmt: skip


def _rows(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "generations.jsonl").read_text().splitlines()]


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("eval") / "greedy"
    _ok(run_cli(*GREEDY, "--output", str(output)))
    return output


def test_outputs(greedy_run):
    rows = _rows(greedy_run)
    assert sorted(row["id"] for row in rows) == list(range(6))
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["sample"] == 0 and row["finish_reason"] in {"stop", "length"}
        assert 1 <= row["num_tokens"] <= 16 and row["status"] in {"correct", "incorrect", "no_box", "timeout", "error"}
    summary = json.loads((greedy_run / "summary.json").read_text())
    assert schema_problems(summary, EvalSummary) == []  # the writer fills the one schema the report reads
    assert summary["num_problems"] == 6 and summary["num_samples"] == 1
    assert summary["truncated"] == sum(row["finish_reason"] == "length" for row in rows)
    assert summary["no_box"] == sum(row["status"] == "no_box" for row in rows)
    for key in ("accuracy", "by_subject", "by_level", "wall_time_s", "generated_tokens_per_s", "device", "generation"):
        assert key in summary
    assert summary["model"] == str(SMOKE_MODEL) and summary["adapter"] is None and summary["backend"] == "hf"
    assert summary["generation"]["max_new_tokens"] == 16 and summary["generation"]["temperature"] == 0.0
    config = json.loads((greedy_run / "eval_config.json").read_text())
    assert config["limit"] == 6 and config["dtype"] == "float32"


def test_prompts_come_from_the_shared_template(greedy_run):
    tokenizer = load_tokenizer(str(SMOKE_MODEL))
    problems = [json.loads(line) for line in (SMOKE_DATA / "test.jsonl").read_text().splitlines()]
    for row in _rows(greedy_run):
        problem = problems[row["id"]]
        assert row["prompt"] == render_generation_prompt(tokenizer, problem["problem"])
        assert (row["unique_id"], row["gold"]) == (problem["unique_id"], problem["answer"])


@pytest.mark.slow  # a killed evaluation and its resume (about 12 s)
def test_resume_after_a_crash_mid_write(greedy_run, tmp_path):
    output = tmp_path / "crashed"
    shutil.copytree(greedy_run, output)
    lines = (greedy_run / "generations.jsonl").read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:2])
    (output / "generations.jsonl").write_bytes(kept + lines[2][:25])  # half-written third line
    result = run_cli(*GREEDY, "--output", str(output))
    _ok(result)
    assert "resuming: 2 rows" in result.stderr
    data = (output / "generations.jsonl").read_bytes()
    assert data.startswith(kept), "finished rows must never be rewritten"
    rows = _rows(output)
    assert sorted(row["id"] for row in rows) == list(range(6))
    original = {row["id"]: row for row in _rows(greedy_run)}
    assert all(row == original[row["id"]] for row in rows), "greedy regeneration should reproduce the rows"


@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path):
    output = tmp_path / "interrupted"
    args = [*GREEDY, "--output", str(output), "--batch_size", "2"]
    result = run_cli(*args, env={_INTERRUPT_ENV: "1"})
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "rerun the same command to resume" in result.stderr
    first = (output / "generations.jsonl").read_bytes()
    assert len(first.splitlines()) == 2 and not (output / "summary.json").exists()

    _ok(run_cli(*args))
    assert (output / "generations.jsonl").read_bytes().startswith(first)
    rows = _rows(output)
    assert len(rows) == 6 and len({(row["id"], row["sample"]) for row in rows}) == 6

    # A finished run reruns instantly: nothing generated, nothing appended.
    before = (output / "generations.jsonl").read_bytes()
    _ok(run_cli(*args))
    assert (output / "generations.jsonl").read_bytes() == before


@pytest.mark.slow  # two more evaluations (about 17 s)
def test_other_settings_are_refused_then_overwritten(greedy_run, tmp_path):
    output = tmp_path / "changed"
    shutil.copytree(greedy_run, output)
    result = run_cli(*BASE, "--limit", "6", "--max_new_tokens", "8", "--output", str(output))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {output} holds a run with other settings (max_new_tokens: 16 -> 8); "
        "use a new --output or pass --overwrite true to start over"
    ]
    _ok(run_cli(*BASE, "--limit", "6", "--max_new_tokens", "8", "--output", str(output), "--overwrite"))
    assert len(_rows(output)) == 6 and all(row["num_tokens"] <= 8 for row in _rows(output))


@pytest.mark.slow
def test_sampling_gives_pass_at_k_and_is_seeded(tmp_path):
    args = [*BASE, "--limit", "4", "--max_new_tokens", "8", "--num_samples", "3", "--temperature", "0.7"]
    _ok(run_cli(*args, "--output", str(tmp_path / "a")))
    rows = _rows(tmp_path / "a")
    assert sorted((row["id"], row["sample"]) for row in rows) == [(i, s) for i in range(4) for s in range(3)]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["num_samples"] == 3 and {"pass@1", "pass@2", "pass@3", "maj@3"} <= summary.keys()

    _ok(run_cli(*args, "--output", str(tmp_path / "b")))
    completions = {(row["id"], row["sample"]): row["completion"] for row in rows}
    assert completions == {(row["id"], row["sample"]): row["completion"] for row in _rows(tmp_path / "b")}
    assert len(set(completions.values())) > 1, "samples should differ from each other"


def test_grade_subcommand(tmp_path):
    meta = [{"id": 0, "subject": "Algebra", "level": 1}, {"id": 1, "subject": "Geometry", "level": 2}]
    rows = [
        {**meta[0], "sample": 0, "completion": "so $x = \\boxed{\\frac12}$", "gold": "0.5"},
        {**meta[0], "sample": 1, "completion": "the answer is \\boxed{3}", "gold": "0.5"},
        {**meta[1], "sample": 0, "completion": "no box here", "gold": "7"},
        {**meta[1], "sample": 1, "completion": "\\boxed{7}", "gold": "7", "finish_reason": "length"},
    ]
    source = tmp_path / "generations.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli("run_eval.py", "grade", "--input", str(source), "--output", str(tmp_path / "scored.jsonl"))
    _ok(result)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["accuracy"] == 0.5 and summary["num_problems"] == 2 and summary["num_samples"] == 2
    assert summary["no_box"] == 1 and summary["truncated"] == 1 and "pass@2" in summary
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [row["correct"] for row in scored] == [True, False, False, True]
    assert [row["status"] for row in scored] == ["correct", "incorrect", "no_box", "correct"]
    assert scored[0]["pred"] == "\\frac12" and scored[2]["pred"] is None
    assert all(row[key] == original[key] for row, original in zip(scored, rows, strict=True) for key in original)


def _fails(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run_eval.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "./no/such/data"], "dataset path not found: ./no/such/data"),
        (["--answer_column", "final"], "column 'final' not found"),
        (["--model", "./no/such/model"], "model path not found: ./no/such/model"),
        (["--num_samples", "4"], "--num_samples 4 with greedy decoding"),
        (["--top_p", "0"], "--top_p must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, extra, message):
    _fails(capsys, [*GREEDY[1:], "--output", str(tmp_path / "out"), *extra], message)


def test_grade_errors(capsys, tmp_path):
    _fails(capsys, ["grade", "--input", str(tmp_path / "missing.jsonl")], "input file not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"completion": "\\boxed{1}"}) + "\n")
    _fails(capsys, ["grade", "--input", str(bad)], "line 1 has no 'gold' field")


def test_unreachable_hub_model_is_one_line(tmp_path):
    """As a user sees it offline: a real process, one line, no traceback."""
    result = run_cli(*GREEDY, "--model", "Qwen/Qwen3-0.6B-Base", "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not load model 'Qwen/Qwen3-0.6B-Base'")
    assert "--model /local/path" in lines[0]
