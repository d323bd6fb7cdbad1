"""Results are never silently wrong, mixed or lost (issue 9), driven through the real entry scripts as a user runs them.

Every case is one subprocess of ``train_sft.py``, ``run_eval.py``, ``run_eval.py grade``, ``run_study.py`` or
``make_report.py`` and asserts the exit code (0 done, 2 bad input or refused, 3 diverged, 130 interrupted), exactly one
``error:`` line on stderr (none on success or interrupt), no traceback, and that the files it must not touch are
byte-identical afterwards (sha256 of every file and the list of folders: a refused call creates nothing either).

The default suite keeps one cheap case per class; the rest, and every case that trains or generates, are ``slow``
(``pytest -m ""`` runs them all).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import OFFLINE_ENV, REPO, SMOKE_DATA, SMOKE_MODEL
from mathsft.artifacts import run_name
from mathsft.config_files import load_yaml_mapping
from summary_factory import eval_summary, write_eval

# ---- running a script ------------------------------------------------------------------------------------------

_CACHE: dict[str, Path] = {}
TINY_TRAINING = [
    "--max_steps", "2", "--max_train_samples", "32", "--max_eval_samples", "8", "--save_steps", "1",
    "--logging_steps", "1", "--eval_steps", "2",
]  # fmt: skip
TINY_EVAL = ["--limit", "2", "--max_new_tokens", "4", "--batch_size", "1", "--no_progress"]


@pytest.fixture(scope="module", autouse=True)
def _hash_cache(tmp_path_factory) -> None:
    """The weight-hash cache of the scripts goes to a test folder, not the user's ~/.cache."""
    _CACHE["dir"] = tmp_path_factory.mktemp("xdg-cache")


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ | OFFLINE_ENV | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return env | {"XDG_CACHE_HOME": str(_CACHE["dir"])} | (extra or {})


def run(*args: str, env: dict[str, str] | None = None, file_size_limit: int | None = None) -> Result:
    """Run an entry script (offline, one thread). ``file_size_limit`` makes writes past it fail: a full disk."""

    def limit_file_size() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=script_env(env), capture_output=True, encoding="utf-8",
        errors="replace", timeout=900, preexec_fn=limit_file_size,
    )  # fmt: skip
    return Result(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)


class Result:
    def __init__(self, code: int, stdout: str, stderr: str, seconds: float) -> None:
        self.code, self.stdout, self.stderr, self.seconds = code, stdout, stderr, seconds

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error:" in line]

    def tail(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.stdout[-2500:]}\n--- stderr ---\n{self.stderr[-3500:]}"


def expect(result: Result, code: int, message: str | None = None) -> Result:
    """Exit code, exactly one ``error: ...`` line for codes 2 and 3 (none otherwise), never a traceback."""
    assert "Traceback" not in result.stdout + result.stderr, result.tail()
    assert result.code == code, result.tail()
    if code in (2, 3):
        assert len(result.error_lines) == 1 and result.error_lines[0].startswith("error: "), result.tail()
        if message is not None:
            assert message in result.error_lines[0], result.tail()
    else:
        assert result.error_lines == [], result.tail()
    return result


# ---- files on disk ---------------------------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file and the name of every folder under ``roots`` (an absent root is recorded as such)."""
    state: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            state[str(root)] = "absent"
            continue
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if path.is_symlink():
                state[str(path)] = f"link to {os.readlink(path)}"
            elif path.is_dir():
                state[str(path)] = "folder"
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def assert_unchanged(before: dict[str, str], after: dict[str, str]) -> None:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    details = [f"{k}: {before.get(k, 'absent')} -> {after.get(k, 'absent')}" for k in changed]
    assert not changed, "files changed:\n" + "\n".join(details[:20])


def untouched(args: list[str], code: int, message: str | None, *roots: Path, **kwargs: Any) -> Result:
    """The call ends with ``code`` (one line for 2 and 3) and leaves ``roots`` byte-identical (nothing created)."""
    before = snapshot(*roots)
    result = expect(run(*args, **kwargs), code, message)
    assert_unchanged(before, snapshot(*roots))
    return result


def refused(args: list[str], message: str | None, *roots: Path, **kwargs: Any) -> Result:
    """Refused (exit 2) in one line naming ``message``; ``roots`` are left byte-identical."""
    return untouched(args, 2, message, *roots, **kwargs)


def smoke_rows(split: str = "train", count: int = 40) -> list[dict[str, Any]]:
    lines = (SMOKE_DATA / f"{split}.jsonl").read_text().splitlines()[:count]
    return [json.loads(line) for line in lines]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def recipe(tmp_path: Path, changes: dict[str, Any], base: str = "adamw") -> str:
    """A smoke recipe with ``changes`` applied, as a YAML file."""
    data = yaml.safe_load((REPO / "recipes" / "smoke" / f"{base}.yaml").read_text()) | changes
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def train_args(output_dir: Path, *extra: str, config: str = "recipes/smoke/adamw.yaml") -> list[str]:
    return ["train_sft.py", "--config", config, "--output_dir", str(output_dir), *TINY_TRAINING, *extra]


def eval_args(output: Path, *extra: str, model: Path = SMOKE_MODEL, dataset: Path = SMOKE_DATA) -> list[str]:
    return ["run_eval.py", "--model", str(model), "--dataset", str(dataset), "--output", str(output), *TINY_EVAL,
            *extra]  # fmt: skip


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run_summary.json").read_text())


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flip_bytes_keeping_size(weights: Path) -> None:
    """Other weights of the same size and header, as after another fine-tuning run of the same model."""
    data = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for offset in range(header + 64, len(data), 4096):
        data[offset] ^= 0x40
    weights.write_bytes(bytes(data))


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended before {what}: exit {process.returncode}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, errors="replace",
    )  # fmt: skip


def fast(*values: Any, id: str | None = None, marks: Any = ()) -> Any:
    """A case of the default suite: one cheap subprocess."""
    return pytest.param(*values, id=id, marks=marks)


def slow(*values: Any, id: str | None = None, marks: Any = ()) -> Any:
    """A case run with ``-m slow`` (or ``-m ""``)."""
    extra = list(marks) if isinstance(marks, list | tuple) else [marks]
    return pytest.param(*values, id=id, marks=[pytest.mark.slow, *extra])


# ---- 1. training: recipe values, types and ranges ----------------------------------------------------------------

# (flags on the command line, recipe changes, what the one line must name)
TRAINING_VALUES = [
    fast(["--learning_rate", "-1"], {}, "learning_rate", id="lr-negative"),
    slow([], {"learning_rate": None}, "learning_rate", id="lr-null-in-recipe"),
    slow(["--learning_rate", "nan"], {}, "learning_rate", id="lr-nan"),
    slow(["--per_device_train_batch_size", "0"], {}, "per_device_train_batch_size", id="batch-size-0"),
    slow(["--gradient_accumulation_steps", "0"], {}, "gradient_accumulation_steps", id="accumulation-0"),
    slow(["--num_train_epochs", "0", "--max_steps", "-1"], {}, "num_train_epochs", id="epochs-0"),
    slow([], {"overlong": "keep"}, "overlong", id="overlong-keep-in-recipe"),
    slow(["--overlong", "keep"], {}, "overlong", id="overlong-keep-on-cli"),
    slow(["--validation_fraction", "1.5"], {}, "validation_fraction", id="validation-fraction-1.5"),
    slow(["--max_length", "20"], {}, "max_length", id="max-length-below-instruction"),
    slow(["--max_grad_norm", "-1"], {}, "max_grad_norm", id="max-grad-norm-negative"),
    slow(["--warmup_steps", "-1"], {}, "warmup_steps", id="warmup-negative"),
    slow(["--adam_beta2", "1.0"], {}, "adam_beta2", id="beta2-1"),
    slow([], {"learning_rate": "fast"}, "learning_rate", id="lr-not-a-number"),
    slow(["--optim", "sgd"], {}, "optim", id="optim-replaced-on-cli"),
    slow([], {"optim": "sgd"}, "optim", id="optim-replaced-in-recipe"),
    slow(["--trust_remote_code", "true"], {}, "trust_remote_code", id="trust-remote-code"),
    slow(["--overwrite", "true", "--resume_from_checkpoint", "true"], {}, "--overwrite", id="overwrite-and-resume"),
    slow(["--optimizer", "lion"], {}, "lion", id="unknown-optimizer"),
    slow(["--seed", "-1"], {}, "seed", id="seed-negative"),
    slow(["--split_seed", "-1"], {}, "split_seed", id="split-seed-negative"),
]


@pytest.mark.parametrize(("flags", "changes", "message"), TRAINING_VALUES)
def test_training_refuses_bad_values(tmp_path, flags, changes, message):
    config = recipe(tmp_path, changes) if changes else "recipes/smoke/adamw.yaml"
    refused(train_args(tmp_path / "out", *flags, config=config), message, tmp_path)


@pytest.mark.slow
def test_lora_settings_are_checked(tmp_path):
    args = train_args(tmp_path / "out", "--lora_r", "0", config="recipes/smoke/lora.yaml")
    refused(args, "lora_r", tmp_path)


# ---- 2. training: data rows --------------------------------------------------------------------------------------


def _row_change(row: int, column: str, value: Any) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        rows = smoke_rows()
        rows[row - 1][column] = value
        return write_jsonl(folder / "train.jsonl", rows)

    return make


def _raw_file(text: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.jsonl").write_bytes(text)
        return folder / "train.jsonl"

    return make


_GOOD_LINE = json.dumps(smoke_rows(count=1)[0]).encode() + b"\n"
TRAINING_DATA = [
    fast(_row_change(6, "problem", None), "row 6", id="null-problem"),
    slow(_row_change(8, "solution", 12), "row 8", id="number-solution"),
    slow(_row_change(3, "problem", ["a list"]), "row 3", id="list-problem"),
    slow(_row_change(5, "solution", "   "), "row 5", id="blank-solution"),
    slow(_raw_file(b""), "empty", id="empty-file"),
    slow(_raw_file(b"\n\n"), "empty", id="blank-lines-only"),
    slow(_raw_file(_GOOD_LINE * 3 + b'{"problem": "x",\n'), "line 4", id="invalid-json"),
    slow(_raw_file(_GOOD_LINE + b"[1, 2]\n"), "line 2", id="row-not-an-object"),
    slow(_raw_file(_GOOD_LINE + b'{"problem": "\xff", "solution": "1"}\n'), "line 2", id="invalid-utf8"),
    slow(_raw_file(_GOOD_LINE + b'{"problem": "x \\ud800", "solution": "1"}\n'), "line 2", id="lone-surrogate"),
]


@pytest.mark.parametrize(("make", "message"), TRAINING_DATA)
def test_training_refuses_bad_data(tmp_path, make, message):
    data = make(tmp_path / "data")
    result = refused(train_args(tmp_path / "out", "--dataset_name", str(data)), message, tmp_path)
    assert str(data) in result.error_lines[0]  # names the file


# ---- 3. training: weights ----------------------------------------------------------------------------------------


def _truncate(weights: Path) -> None:
    os.truncate(weights, weights.stat().st_size // 2)


def _corrupt_header(weights: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32
    weights.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _corrupt_header], ids=["truncated", "corrupt-header"])
def test_training_refuses_damaged_weights(tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(SMOKE_MODEL, model)
    damage(model / "model.safetensors")
    args = train_args(tmp_path / "out", "--model_name_or_path", str(model))
    refused(args, str(model), tmp_path)


# ---- 4. outputs that cannot be written ---------------------------------------------------------------------------


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def _grade_input(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"completion": "\\boxed{4}", "gold": "4"}])


def _eval_source(tmp_path: Path) -> Path:
    """A finished evaluation folder for the report to read (its summary built from the schema)."""
    write_eval(tmp_path / "eval-base", eval_summary())
    return tmp_path / "eval-base"


OUTPUT_CASES = [
    fast(lambda t: train_args(_a_file(t) / "run"), "a-file", id="train-output-under-a-file"),
    slow(lambda t: train_args(_a_file(t)), "a-file", id="train-output-is-a-file"),
    slow(lambda t: eval_args(_a_file(t)), "a-file", id="eval-output-is-a-file"),
    slow(lambda t: eval_args(_a_file(t) / "eval"), "a-file", id="eval-output-under-a-file"),
    slow(lambda t: ["run_eval.py", "grade", "--input", str(_grade_input(t)), "--output", str(_a_file(t) / "x.jsonl")],
         "a-file", id="grade-output-under-a-file"),  # fmt: skip
    slow(lambda t: ["run_study.py", "--config", "studies/smoke.yaml", "--study_dir", str(_a_file(t) / "study")],
         "a-file", id="study-dir-under-a-file"),  # fmt: skip
    fast(lambda t: ["make_report.py", str(_eval_source(t)), "--output", str(_a_file(t) / "report")], "a-file",
         id="report-under-a-file"),  # fmt: skip
    slow(lambda t: ["make_report.py", str(_eval_source(t)), "--output", str(_a_file(t))], "a-file",
         id="report-is-a-file"),  # fmt: skip
]


@pytest.mark.parametrize(("make_args", "message"), OUTPUT_CASES)
def test_unwritable_output_is_one_line(tmp_path, make_args, message):
    args = make_args(tmp_path)
    refused(args, message, tmp_path)


@pytest.mark.slow
def test_output_without_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop root (the path-under-a-file cases cover the class)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(train_args(locked / "run"), "permission", tmp_path)
    finally:
        locked.chmod(0o755)


@pytest.mark.slow
def test_full_disk_mid_checkpoint_is_one_line_and_never_resumed(tmp_path):
    """A save cut short (here by a file size limit, as by a full disk) is one line, and that checkpoint is never
    taken for complete: the trainer's optimizer.pt (~1.2 MB) cannot be written, the weights (0.6 MB) can."""
    output = tmp_path / "run"
    result = expect(run(*train_args(output), file_size_limit=1_000_000), 2, "could not save")
    assert str(output / "checkpoint-1") in result.error_lines[0]
    cut = output / "checkpoint-1"
    assert cut.is_dir() and not (cut / "mathsft_checkpoint.json").exists()
    assert not (output / "model.safetensors").exists()
    before = snapshot(tmp_path)
    resumed = expect(run(*train_args(output), "--resume_from_checkpoint", "true"), 2, "no complete checkpoint")
    assert "checkpoint-1" in resumed.stdout and "incomplete" in resumed.stdout  # says which one it skipped, and why
    assert_unchanged(before, snapshot(tmp_path))


# ---- 5. evaluation settings --------------------------------------------------------------------------------------

EVAL_SETTINGS = [
    slow(["--grader_timeout", "0"], "--grader_timeout", id="grader-timeout-0"),
    slow(["--grader_timeout", "-1"], "--grader_timeout", id="grader-timeout-negative"),
    fast(["--grader_timeout", "nan"], "--grader_timeout", id="grader-timeout-nan"),
    slow(["--temperature", "-1"], "--temperature", id="temperature-negative"),
    slow(["--temperature", "nan"], "--temperature", id="temperature-nan"),
    slow(["--top_p", "0"], "--top_p", id="top-p-0"),
    slow(["--top_p", "1.5"], "--top_p", id="top-p-above-1"),
    slow(["--num_samples", "2"], "--num_samples", id="samples-without-temperature"),
    slow(["--num_samples", "0"], "--num_samples", id="samples-0"),
    slow(["--max_new_tokens", "0"], "--max_new_tokens", id="max-new-tokens-0"),
    slow(["--limit", "0"], "--limit", id="limit-0"),
    slow(["--trust_remote_code", "true"], "trust_remote_code", id="trust-remote-code"),
    slow(["--seed", "-1"], "--seed", id="seed-negative"),
    slow(["--adapter", "no-such-adapter"], "no-such-adapter", id="missing-adapter"),
]


@pytest.mark.parametrize(("flags", "message"), EVAL_SETTINGS)
def test_evaluation_refuses_bad_settings(tmp_path, flags, message):
    refused(eval_args(tmp_path / "eval", *flags), message, tmp_path)


@pytest.mark.slow
def test_evaluation_refuses_a_null_answer(tmp_path):
    rows = smoke_rows("test", 4)
    rows[1]["answer"] = None
    data = write_jsonl(tmp_path / "data" / "test.jsonl", rows).parent
    refused(eval_args(tmp_path / "eval", dataset=data), "row 2", tmp_path)


# ---- 6. JSONL read by `run_eval.py grade` ------------------------------------------------------------------------

GOOD = json.dumps({"completion": "so \\boxed{4}", "gold": "4"}).encode() + b"\n"
BAD_GRADE_INPUTS = [
    fast(GOOD + b'{"completion": "\xff\xfe", "gold": "1"}\n', "line 2", id="invalid-utf8"),
    slow(GOOD + b"[1, 2]\n", "line 2", id="row-not-an-object"),
    slow(GOOD + b'"just text"\n', "line 2", id="row-a-string"),
    fast(GOOD + b'{"completion": "x", "gold": "1", "id": [1, 2]}\n', "line 2", id="unhashable-id"),
    slow(GOOD + b'{"completion": "x", "gold": "1", "id": {"a": 1}}\n', "line 2", id="id-an-object"),
    slow(GOOD + b'{"completion": "x", "gold": "1", "sample": [0]}\n', "line 2", id="unhashable-sample"),
    slow(GOOD + b'{"completion": "x", "gold": null}\n', "line 2", id="null-gold"),
    slow(GOOD + b'{"gold": "1"}\n', "line 2", id="no-completion"),
    slow(GOOD + b'{"completion": 5, "gold": "5"}\n', "line 2", id="number-completion"),
    slow(GOOD + b'{"completion": "a", "gold": "1", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "line 2",
         id="json-nested-100k-deep"),  # fmt: skip
    slow(GOOD + b'{"completion": "x", "go', "incomplete", id="torn-last-line"),
    slow(b"", "no rows", id="empty-file"),
]


@pytest.mark.parametrize(("content", "message"), BAD_GRADE_INPUTS)
def test_grade_refuses_bad_rows(tmp_path, content, message):
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    output = tmp_path / "out.jsonl"
    refused(["run_eval.py", "grade", "--input", str(source), "--output", str(output)], message, tmp_path)


@pytest.mark.slow
def test_grade_output_that_is_a_folder(tmp_path):
    source = _grade_input(tmp_path)
    (tmp_path / "out").mkdir()
    refused(["run_eval.py", "grade", "--input", str(source), "--output", str(tmp_path / "out")], "folder", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_grade_refuses_bad_grader_timeout(tmp_path, timeout):
    source = _grade_input(tmp_path)
    args = ["run_eval.py", "grade", "--input", str(source), "--grader_timeout", timeout]
    refused(args, "--grader_timeout", tmp_path)


HOSTILE_COMPLETIONS = {
    "lone-surrogate": "\ud800 then \\boxed{4}",
    "one-megabyte": "x" * 1_000_000 + " \\boxed{4}",
    "text-nested-1000-deep": "\\text{" * 1000 + "a" + "}" * 1000 + " \\boxed{4}",
    "text-nested-990-deep-in-1-MB": "\\text{" * 990 + "$\\boxed{4}$" + "}" * 990 + "a" * (1 << 20),  # 85 s before
    "box-nested-1000-deep": "\\boxed{" * 1000 + "4" + "}" * 1000,
    "ten-thousand-boxes": "\\boxed{1} " * 10_000 + "\\boxed{4}",
    "null-bytes": "\x00\\boxed{4}\x00",
}
STATUSES = {"correct", "incorrect", "no_box", "timeout", "error"}


@pytest.mark.parametrize(
    "name", [fast("lone-surrogate")] + [slow(name) for name in HOSTILE_COMPLETIONS if name != "lone-surrogate"]
)
def test_grade_hostile_rows_give_graded_rows(tmp_path, name):
    source = tmp_path / "in.jsonl"
    rows = [{"completion": "so \\boxed{4}", "gold": "4"}, {"completion": HOSTILE_COMPLETIONS[name], "gold": "4"}]
    # ensure_ascii: a lone surrogate can only be written as a JSON escape
    source.write_text("".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    before = snapshot(source)
    result = expect(run("run_eval.py", "grade", "--input", str(source), "--output", str(output),
                        "--grader_timeout", "5"), 0)  # fmt: skip
    assert_unchanged(before, snapshot(source))
    assert result.seconds < 60, f"grading two rows with a 5 s limit took {result.seconds:.0f} s"
    graded = [json.loads(line) for line in output.read_bytes().decode("utf-8").splitlines()]  # valid UTF-8
    assert len(graded) == 2 and all(row["status"] in STATUSES for row in graded)
    assert graded[0]["correct"] is True
    assert graded[1]["completion"] == HOSTILE_COMPLETIONS[name]  # kept as it was, surrogates and null bytes too
    assert json.loads(result.stdout.strip().splitlines()[-1])["num_problems"] == 2


def _numbered_rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "completion": f"{'work ' * 40}\\boxed{{{i}}}", "gold": str(i % 3)} for i in range(count)]


@pytest.mark.slow
def test_grade_in_place_keeps_every_row(tmp_path):
    path = write_jsonl(tmp_path / "generations.jsonl", _numbered_rows(21))
    expect(run("run_eval.py", "grade", "--input", str(path), "--output", str(path)), 0)
    graded = rows_of(path)
    assert [row["id"] for row in graded] == list(range(21))
    assert [row["correct"] for row in graded] == [i % 3 == i for i in range(21)]
    assert [p.name for p in tmp_path.iterdir()] == ["generations.jsonl"]  # no temporary file left


def test_grade_in_place_write_failure_loses_no_row(tmp_path):
    """The output cannot be written past the input's size (a full disk): one line, and the input is intact."""
    path = write_jsonl(tmp_path / "generations.jsonl", _numbered_rows(21))
    args = ["run_eval.py", "grade", "--input", str(path), "--output", str(path)]
    refused(args, str(path), tmp_path, file_size_limit=path.stat().st_size)


# ---- 7. the study: validate everything before writing anything ---------------------------------------------------

STUDY = ["run_study.py", "--config", "studies/smoke.yaml"]


@pytest.mark.slow  # a study subprocess (about 12 s); test_study_seeds keeps an in-process refused study
def test_refused_study_leaves_the_disk_byte_identical(tmp_path):
    """A stage run with other settings is refused, and study_config.json is not rewritten."""
    study = tmp_path / "study"
    rate = load_yaml_mapping(str(REPO / "recipes/smoke/adamw.yaml"), "recipe")["learning_rate"]
    stage = study / "train" / run_name("adamw", float(rate))  # the folder the study would train AdamW in
    stage.mkdir(parents=True)
    (study / "study_config.json").write_text('{"methods": ["adamw"], "written": "by an earlier call"}\n')
    (stage / "stage_config.json").write_text(json.dumps({"stage": "train", "command": ["an", "older", "command"]}))
    (stage / "run_summary.json").write_text(json.dumps({"method": "adamw", "interrupted": False}))
    refused([*STUDY, "--study_dir", str(study)], "other settings", tmp_path)


STUDY_CASES = [
    slow(["--train_overrides", '{"per_device_train_batch_size": 0}'], "per_device_train_batch_size", id="batch-0"),
    slow(["--train_overrides", '{"learning_rate_typo": 1}'], "learning_rate_typo", id="unknown-override"),
    slow(["--train_overrides", '{"optim": "sgd"}'], "optim", id="replaced-field-override"),
    slow(["--train_overrides", '{"overlong": "keep"}'], "overlong", id="overlong-keep"),
    slow(["--train_overrides", '{"num_train_epochs": 0, "max_steps": -1}'], "num_train_epochs", id="epochs-0"),
    slow(["--learning_rates", '{"sgd": [-1]}'], "learning_rates", id="negative-rate"),
    slow(["--learning_rates", '{"sgd": ["nan"]}'], "learning_rates", id="nan-rate"),
    slow(["--evaluation", '{"grader_timeout": 0}'], "grader_timeout", id="grader-timeout-0"),
    slow(["--evaluation", '{"temperature": -1}'], "temperature", id="temperature-negative"),
    slow(["--methods", "adamw", "lion"], "lion", id="unknown-method"),
    slow(["--train_overrides", '{"seed": -1}'], "seed", id="seed-negative"),
    slow(["--evaluation", '{"seed": -1}'], "seed", id="eval-seed-negative"),
]


@pytest.mark.parametrize(("flags", "message"), STUDY_CASES)
def test_study_refuses_before_writing(tmp_path, flags, message):
    refused([*STUDY, "--study_dir", str(tmp_path / "study"), *flags], message, tmp_path)


# ---- 8. make_report.py ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_of_a_missing_source(tmp_path):
    refused(["make_report.py", str(tmp_path / "no-such-run"), "--output", str(tmp_path / "report")], "no-such-run",
            tmp_path)  # fmt: skip


# ---- 9. one writer -----------------------------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from mathsft.identity import exclusive_output
with exclusive_output(Path(sys.argv[1]), "test"):
    print("locked", flush=True)
    sys.stdin.read()
"""



@contextlib.contextmanager
def holding_lock(directory: Path) -> Iterator[int]:
    """Another process holding the one-writer lock of ``directory``; yields its PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], cwd=REPO, env=script_env(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_args",
    [
        lambda d: train_args(d),
        lambda d: eval_args(d),
        lambda d: [*STUDY, "--study_dir", str(d)],
    ],
    ids=["train", "eval", "study"],
)
def test_second_writer_is_refused_naming_the_holder(tmp_path, make_args):
    output = tmp_path / "out"
    with holding_lock(output) as pid:
        refused(make_args(output), f"process {pid}", tmp_path)
    assert not output.exists(), "the holder's lock must go with it"


@pytest.mark.slow
def test_two_concurrent_evaluations_cannot_both_write(tmp_path):
    """The first evaluation holds the lock (stopped mid-run so the overlap is certain); the second exits 2 naming it,
    touching nothing; the first then finishes with every problem exactly once."""
    output = tmp_path / "eval"
    args = eval_args(output, "--limit", "4")
    first = start(*args)
    try:
        lock = output / ".mathsft.lock"
        wait_for(lambda: lock.is_file() and lock.read_text().strip() == str(first.pid), first, "the first lock")
        first.send_signal(signal.SIGSTOP)
        refused(args, f"process {first.pid}", tmp_path)
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=600)
        assert first.returncode == 0, stderr[-3000:]
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait()
    keys = [(row["id"], row["sample"]) for row in rows_of(output / "generations.jsonl")]
    assert sorted(keys) == [(i, 0) for i in range(4)]


# ---- 10. run identity of training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-step AdamW run with a complete checkpoint at each step."""
    output = tmp_path_factory.mktemp("finished") / "run"
    expect(run(*train_args(output)), 0)
    assert [p.name for p in sorted(output.glob("checkpoint-*"))] == ["checkpoint-1", "checkpoint-2"]
    return output


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def crashed_copy(finished_run: Path, tmp_path: Path) -> Path:
    """The finished run as a crash before its end leaves it: no final model, no run_summary.json."""
    copy = copy_run(finished_run, tmp_path)
    (copy / "run_summary.json").unlink()
    (copy / "model.safetensors").unlink()
    return copy


@pytest.mark.slow
def test_finished_identical_run_is_not_redone(finished_run):
    result = untouched(train_args(finished_run), 0, None, finished_run)
    assert "already" in result.stdout and "nothing to do" in result.stdout


@pytest.mark.slow
def test_different_run_in_output_dir_is_refused(finished_run):
    refused(train_args(finished_run, "--learning_rate", "0.002"), "learning_rate", finished_run)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--eos_token", "<|endoftext|>"], 2, "eos_token"),  # what the model learns to stop on
        (["--data_seed", "7"], 2, "data_seed"),
        (["--max_eval_samples", "4", "--logging_steps", "2", "--save_total_limit", "1"], 0, None),  # only logging
    ],
    ids=["eos-token", "data-seed", "logging-only"],
)
def test_every_result_defining_setting_is_in_the_identity(finished_run, flags, code, message):
    untouched(train_args(finished_run, *flags), code, message, finished_run)


@pytest.mark.slow
def test_resume_across_methods_in_the_same_folder_is_refused(finished_run):
    args = train_args(finished_run, "--resume_from_checkpoint", "true", config="recipes/smoke/sgd.yaml")
    refused(args, "method", finished_run)


@pytest.mark.slow
def test_resume_across_methods_from_a_checkpoint_path_is_refused(finished_run, tmp_path):
    checkpoint = finished_run / "checkpoint-1"
    args = train_args(tmp_path / "sgd", "--resume_from_checkpoint", str(checkpoint), config="recipes/smoke/sgd.yaml")
    refused(args, "method", finished_run, tmp_path)


@pytest.mark.slow
def test_folder_of_unknown_files_is_refused(tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "notes.txt").write_text("my notes\n")
    refused(train_args(output), "did not write there (notes.txt)", tmp_path)


@pytest.mark.slow
def test_unfinished_run_needs_resume_or_overwrite(finished_run, tmp_path):
    copy = crashed_copy(finished_run, tmp_path)
    refused(train_args(copy), "--resume_from_checkpoint true", tmp_path)


def _cut_marker(checkpoint: Path) -> str:
    (checkpoint / "mathsft_checkpoint.json").unlink()  # the save was cut before its last file
    return "incomplete"


def _cut_weights(checkpoint: Path) -> str:
    _truncate(checkpoint / "model.safetensors")  # a file cut after the save (the marker is there)
    return "damaged"


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_cut_marker, _cut_weights], ids=["no-marker", "truncated-weights"])
def test_resume_skips_an_incomplete_checkpoint(finished_run, tmp_path, damage):
    """The newest checkpoint is skipped with a message; the older complete one is used, and the resumed run ends
    where the uninterrupted one did."""
    copy = crashed_copy(finished_run, tmp_path)
    why = damage(copy / "checkpoint-2")
    result = expect(run(*train_args(copy), "--resume_from_checkpoint", "true"), 0)
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipping")]
    assert len(skipped) == 1 and "checkpoint-2" in skipped[0] and why in skipped[0], result.tail()
    resumed, original = summary(copy), summary(finished_run)
    assert resumed["global_step"] == 2 and not resumed["interrupted"]
    assert [step for step, _ in resumed["train_loss"]] == [1, 2]
    for (_, got), (_, want) in zip(resumed["train_loss"], original["train_loss"], strict=True):
        assert math.isclose(got, want, rel_tol=1e-4)
    assert (copy / "checkpoint-2" / "mathsft_checkpoint.json").is_file()  # saved again, complete


@pytest.mark.slow
def test_overwrite_starts_clean(finished_run, tmp_path):
    copy = copy_run(finished_run, tmp_path)
    (copy / "notes.txt").write_text("a file of the user's, not the old run's\n")
    refused(train_args(copy, "--learning_rate", "0.002", "--overwrite", "true"), "notes.txt", tmp_path)
    (copy / "notes.txt").unlink()
    old_events = {p.name for p in (copy / "tensorboard").iterdir()}
    expect(run(*train_args(copy, "--learning_rate", "0.002", "--overwrite", "true")), 0)
    assert not old_events & {p.name for p in (copy / "tensorboard").iterdir()}, "old TensorBoard events were kept"
    assert summary(copy)["hyperparameters"]["learning_rate"] == 0.002
    identity = json.loads((copy / "run_identity.json").read_text())
    assert identity["hyperparameters"]["learning_rate"] == 0.002
    for marker in copy.glob("checkpoint-*/mathsft_checkpoint.json"):
        assert json.loads(marker.read_text())["identity"] == identity


# ---- 11. run identity of evaluation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_eval(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("finished-eval") / "eval"
    expect(run(*eval_args(output)), 0)
    return output


def copy_eval(finished_eval: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "eval"
    shutil.copytree(finished_eval, copy)
    return copy


@pytest.mark.slow
def test_finished_identical_evaluation_reprints_its_summary(finished_eval):
    result = untouched(eval_args(finished_eval), 0, None, finished_eval)
    assert "accuracy" in result.stdout.lower()


@pytest.mark.slow
def test_evaluation_with_other_settings_is_refused(finished_eval):
    refused(eval_args(finished_eval, "--max_new_tokens", "5"), "max_new_tokens", finished_eval)


@pytest.mark.slow
def test_generations_of_unknown_settings_are_refused(finished_eval, tmp_path):
    copy = copy_eval(finished_eval, tmp_path)
    (copy / "eval_config.json").unlink()
    refused(eval_args(copy), "eval_config.json", tmp_path)


RESUMED_ROWS = [
    slow(b'{"id": 0, "sample": 0, "completion": "\xff"}\n', "not UTF-8", id="invalid-utf8"),
    slow(b"[0, 0]\n", "not an object", id="row-not-an-object"),
    slow(b'{"id": [0], "sample": 0, "completion": "x"}\n', "'id'", id="unhashable-id"),
    slow(b'{"sample": 0, "completion": "x"}\n', "'id'", id="row-without-id"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), RESUMED_ROWS)
def test_resume_with_bad_generations_is_refused(finished_eval, tmp_path, line, message):
    copy = copy_eval(finished_eval, tmp_path)
    generations = copy / "generations.jsonl"
    first, rest = generations.read_bytes().split(b"\n", 1)
    generations.write_bytes(first + b"\n" + line + rest)
    refused(eval_args(copy), message, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("interrupted", [False, True], ids=["after-a-finished-run", "on-resume"])
def test_evaluation_detects_replaced_weights_of_the_same_size(tmp_path, interrupted):
    """Issue case 4: the weights under --model change (same size and header) between a run and its rerun."""
    model = tmp_path / "model"
    shutil.copytree(SMOKE_MODEL, model)
    output = tmp_path / "eval"
    args = eval_args(output, "--limit", "3", model=model)
    if interrupted:  # Ctrl-C after the first batch (the scripts' test hook), as in the issue
        expect(run(*args, env={"MATHSFT_EVAL_INTERRUPT_AFTER_BATCHES": "1"}), 130)
        assert len(rows_of(output / "generations.jsonl")) == 1
    else:
        expect(run(*args), 0)
    size = (model / "model.safetensors").stat().st_size
    flip_bytes_keeping_size(model / "model.safetensors")
    assert (model / "model.safetensors").stat().st_size == size
    refused(args, "model_weights", output)


# ---- 12. interrupt, SIGKILL and resume ---------------------------------------------------------------------------


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_evaluation_resumed_after_a_kill_equals_an_uninterrupted_run(tmp_path, sig):
    settings = ["--limit", "8", "--max_new_tokens", "12"]
    reference = tmp_path / "reference"
    expect(run(*eval_args(reference, *settings)), 0)
    output = tmp_path / "killed"
    process = start(*eval_args(output, *settings))
    wait_for(lambda: _complete_lines(output / "generations.jsonl") >= 1, process, "the first row")
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    if sig != signal.SIGKILL:
        assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
        assert "error:" not in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    assert _complete_lines(output / "generations.jsonl") < 8, "the run ended before the signal: nothing to resume"
    result = expect(run(*eval_args(output, *settings)), 0)  # a SIGKILLed holder leaves no lock that blocks
    assert "resuming" in result.stderr

    def by_key(path: Path) -> list[dict[str, Any]]:
        return sorted(rows_of(path / "generations.jsonl"), key=lambda row: (row["id"], row["sample"]))

    assert by_key(output) == by_key(reference)
    assert json.loads((output / "summary.json").read_text())["accuracy"] == json.loads(
        (reference / "summary.json").read_text()
    )["accuracy"]


LONGER_TRAINING = ["--max_steps", "8", "--max_train_samples", "64", "--save_steps", "2", "--eval_steps", "4"]


@pytest.mark.slow
def test_training_resumed_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    reference = tmp_path / "reference"
    expect(run(*train_args(reference, *LONGER_TRAINING)), 0)
    output = tmp_path / "killed"
    process = start(*train_args(output, *LONGER_TRAINING))
    try:
        marker = output / "checkpoint-2" / "mathsft_checkpoint.json"
        wait_for(marker.is_file, process, "the first complete checkpoint")
        process.kill()
    finally:
        process.kill()
        process.communicate(timeout=120)
    assert not (output / "run_summary.json").exists(), "the run ended before the kill: nothing to resume"
    result = expect(run(*train_args(output, *LONGER_TRAINING, "--resume_from_checkpoint", "true")), 0)
    assert "Traceback" not in result.stderr
    resumed, uninterrupted = summary(output), summary(reference)
    assert resumed["global_step"] == uninterrupted["global_step"] == 8
    for key in ("train_loss", "eval_loss"):
        assert [s for s, _ in resumed[key]] == [s for s, _ in uninterrupted[key]], key
        for (_, got), (_, want) in zip(resumed[key], uninterrupted[key], strict=True):
            assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), (key, resumed[key], uninterrupted[key])
    import torch

    got, want = load_file(output / "model.safetensors"), load_file(reference / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_training_exits_130_and_keeps_no_final_model(tmp_path, sig):
    """Issue case 9: an interrupted run is not a finished one (``train && eval`` must not evaluate it)."""
    output = tmp_path / "run"
    process = start(*train_args(output, "--max_steps", "200", "--max_train_samples", "64", "--save_steps", "1000"))
    wait_for((output / "perf_epochs.jsonl").is_file, process, "the first training step")  # written at train begin
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert "error:" not in stderr
    record = summary(output)
    assert record["interrupted"] is True and 0 < record["global_step"] < 200
    assert not (output / "model.safetensors").exists(), "a half-trained model must not look finished"
    checkpoint = output / f"checkpoint-{record['global_step']}"
    assert (checkpoint / "mathsft_checkpoint.json").is_file(), "the interrupt saves a complete checkpoint"


# ---- 13. divergence ----------------------------------------------------------------------------------------------

DIVERGING = [
    "--learning_rate", "1e6", "--max_grad_norm", "0", "--warmup_steps", "0", "--max_steps", "8",
    "--max_train_samples", "64", "--save_steps", "1", "--eval_steps", "2",
]  # fmt: skip


@pytest.mark.slow
def test_divergence_stops_with_exit_3_and_keeps_the_last_finite_checkpoint(tmp_path):
    import torch
    from safetensors.torch import load_file

    output = tmp_path / "run"
    args = train_args(output, *DIVERGING, config="recipes/smoke/sgd.yaml")
    result = expect(run(*args), 3, "diverged at step")
    record = summary(output)
    assert record["diverged"] is True and record["interrupted"] is False
    step = record["diverged_step"]
    assert isinstance(step, int) and 1 < step < 8
    assert f"step {step}" in result.error_lines[0]
    assert not (output / "model.safetensors").exists(), "NaN weights must not become the final model"
    checkpoints = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    assert checkpoints and max(checkpoints) == step - 1, checkpoints
    last = output / f"checkpoint-{step - 1}"
    assert (last / "mathsft_checkpoint.json").is_file() and str(last) in result.error_lines[0]
    assert all(torch.isfinite(t).all() for t in load_file(last / "model.safetensors").values())

    # The loss is never a NaN logged as 0.0: the summary, the trainer's log and TensorBoard.
    assert all(value is None or (math.isfinite(value) and value != 0.0) for _, value in record["train_loss"])
    state = json.loads((output / "trainer_state.json").read_text())
    assert all(entry["loss"] != 0.0 for entry in state["log_history"] if "loss" in entry)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert all(event.value != 0.0 for event in events.Scalars("train/loss"))

    # Rerunning the same command does not retrain or touch it: the run diverged, exit 3 again.
    untouched(args, 3, "diverged at step", tmp_path)
    # The report calls it diverged, not 0.0000 and not missing.
    report = tmp_path / "report"
    expect(run("make_report.py", str(output), "--output", str(report)), 0)
    text = (report / "report.md").read_text()
    assert f"diverged at step {step}" in text and "0.0000" not in text
