"""``--overwrite`` and the study remove only what the project wrote (issue 16, item 1), through the real scripts.

Each refusal is checked as ``tests/test_safety.py`` does: exit 2, one ``error:`` line naming the reason, no traceback,
and the sha256 of every file under the folders involved (the user's files, the checkout, link targets, sibling runs,
model and data folders) unchanged. The rule itself (``mathsft.ownership``) is also checked in-process, case by case,
which costs milliseconds. Cases that start a script are few in the default suite; the others are ``slow``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_safety import (  # noqa: F401 - _hash_cache: the scripts' weight-hash cache goes to a test folder
    Result,
    _hash_cache,
    assert_unchanged,
    eval_args,
    expect,
    refused,
    run,
    script_env,
    snapshot,
    train_args,
)

from conftest import REPO, SMOKE_DATA, SMOKE_MODEL, SMOKE_TASK_DATA, SMOKE_TASK_MODEL
from mathsft import ownership
from mathsft.errors import UserError

OVERWRITE = ("--overwrite", "true")
ADAMW = str(REPO / "recipes" / "smoke" / "adamw.yaml")


# ---- folders as the scripts leave them (no training: the file names each writer writes) --------------------------


def fake_run(folder: Path, card: bool = True) -> Path:
    """A finished training run's folder as ``train_sft.py`` leaves it (file contents are stand-ins)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_identity.json").write_text('{"method": "adamw"}\n')
    for name in ("run_summary.json", "validation_ids.json", "trainer_state.json", "config.json",
                 "generation_config.json", "tokenizer.json", "tokenizer_config.json"):  # fmt: skip
        (folder / name).write_text("{}\n")
    for name in ("perf_epochs.jsonl", "model.safetensors", "training_args.bin", "chat_template.jinja"):
        (folder / name).write_bytes(b"\x00ours")
    if card:
        (folder / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- trl\n- sft\n---\n# Model Card\n")
    (folder / "tensorboard").mkdir(exist_ok=True)
    (folder / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"events")
    checkpoint = folder / "checkpoint-2"
    checkpoint.mkdir(exist_ok=True)
    files = {"model.safetensors": 4, "optimizer.pt": 4, "rng_state.pth": 4, "trainer_state.json": 3}
    for name in files:
        (checkpoint / name).write_bytes(b"ours"[: files[name]])
    (checkpoint / "mathsft_checkpoint.json").write_text(json.dumps({"global_step": 2, "identity": {}, "files": files}))
    return folder


def fake_eval(folder: Path) -> Path:
    """An evaluation's folder as ``run_eval.py`` leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval_config.json").write_text('{"model": "m"}\n')
    (folder / "generations.jsonl").write_text('{"id": 0, "sample": 0}\n')
    (folder / "summary.json").write_text('{"accuracy": 0.5}\n')
    return folder


def user_files(folder: Path) -> Path:
    """What a person keeps in a folder: a thesis, photos and a git history."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (folder / ".git").mkdir(exist_ok=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "thesis.tex").write_text("\\documentclass{book}\n")
    return folder


def fake_checkout(folder: Path) -> Path:
    """A git checkout of some project: sources, assets and .git."""
    user_files(folder)
    (folder / "src").mkdir()
    (folder / "src" / "main.py").write_text("print('hello')\n")
    (folder / "README.md").write_text("# my project\n")
    return folder


def foreign(folder: Path, kinds: tuple[str, ...] = ownership.TRAINING_FOLDER) -> list[str]:
    return ownership.inventory(folder, kinds).foreign


# ---- the rule, in-process (default suite: milliseconds) -----------------------------------------------------------


def test_a_run_of_ours_is_owned_entirely(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    (run_dir / ".mathsft.lock").write_text("123")
    (run_dir / ".run_summary.json.k2j3h4.tmp").write_text("{")  # an atomic write cut short
    found = ownership.inventory(run_dir, ownership.TRAINING_FOLDER)
    assert found.foreign == []
    assert {p.name for p in found.removable()} == {p.name for p in run_dir.iterdir()} - {".mathsft.lock"}


def test_an_evaluation_and_a_stage_of_ours_are_owned(tmp_path):
    folder = fake_eval(tmp_path / "eval")
    (folder / "stage_config.json").write_text('{"stage": "eval"}\n')
    (folder / "stage.log").write_text("log\n")
    (folder / "generations.rank1.jsonl").write_text("")
    found = ownership.inventory(folder, (ownership.EVAL, ownership.STAGE))
    assert found.foreign == [] and len(found.owned) == 6
    kept = found.removable(keep=("stage_config.json", "stage.log"))
    owned = {"eval_config.json", "generations.jsonl", "summary.json", "generations.rank1.jsonl"}
    assert {p.name for p in kept} == owned


@pytest.mark.parametrize(
    ("make", "kinds", "named"),
    [
        (lambda d: (fake_run(d), (d / "thesis.tex").write_text("x")), None, "thesis.tex"),
        (lambda d: (fake_run(d), (d / "photos").mkdir()), None, "photos/"),
        (lambda d: (fake_run(d, card=False), (d / "README.md").write_text("# my notes\n")), None, "README.md"),
        (lambda d: (fake_run(d), (d / "checkpoint-2" / "notes.txt").write_text("x")), None, "checkpoint-2/notes.txt"),
        (lambda d: (fake_run(d), (d / "tensorboard" / "mine.csv").write_text("x")), None, "tensorboard/mine.csv"),
        # a model folder of the user's: model files without the run's record
        (lambda d: shutil.copytree(SMOKE_MODEL, d), None, "model.safetensors with no run_identity.json"),
        # a checkpoint without our marker and without a run around it
        (lambda d: (d / "checkpoint-3").mkdir(parents=True), None, "checkpoint-3/"),
        (lambda d: (d.mkdir(), (d / "trainer_state.json").write_text("{}")), None, "trainer_state.json with no"),
        (lambda d: (fake_eval(d), (d / "eval_config.json").unlink()), (ownership.EVAL,), "summary.json with no"),
        (lambda d: (d.mkdir(), (d / "stage.log").write_text("x")), (ownership.STAGE,), "stage.log with no"),
        (lambda d: (fake_eval(d), (d / "run_summary.json").write_text("{}")), (ownership.EVAL,), "run_summary.json"),
    ],
    ids=["user-file", "user-folder", "user-readme", "file-in-checkpoint", "file-in-tensorboard", "user-model",
         "bare-checkpoint", "trainer-state-alone", "eval-summary-without-config", "log-without-record",
         "run-file-in-eval"],  # fmt: skip
)
def test_anything_else_is_foreign(tmp_path, make, kinds, named):
    folder = tmp_path / "out"
    make(folder)
    found = foreign(folder, kinds or ownership.TRAINING_FOLDER)
    assert any(entry.startswith(named) for entry in found), found


def test_links_are_foreign_and_never_followed(tmp_path):
    target = user_files(tmp_path / "target")
    run_dir = fake_run(tmp_path / "run")
    (run_dir / "data").symlink_to(target)
    (run_dir / "model.safetensors").unlink()
    (run_dir / "model.safetensors").symlink_to(target / "thesis.tex")
    (run_dir / "checkpoint-2" / "optimizer.pt").unlink()
    (run_dir / "checkpoint-2" / "optimizer.pt").symlink_to(target / "thesis.tex")
    found = foreign(run_dir)
    assert f"data -> {target}" in found and any(e.startswith("model.safetensors ->") for e in found)
    assert any(e.startswith("checkpoint-2/optimizer.pt") for e in found)
    before = snapshot(target)
    ownership.remove([run_dir / "data", run_dir / "checkpoint-2", run_dir / "model.safetensors"])
    assert_unchanged(before, snapshot(target))
    assert not (run_dir / "checkpoint-2").exists() and (run_dir / "data").is_symlink()


def test_refusal_names_three_entries_and_does_not_invite_deletion(tmp_path):
    folder = fake_run(tmp_path / "run")
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (folder / name).write_text("mine")
    with pytest.raises(UserError) as error:
        ownership.refuse_foreign(folder, ownership.TRAINING_FOLDER, "output_dir")
    message = str(error.value)
    assert "a.txt, b.txt, c.txt and 2 more" in message and "d.txt" not in message
    assert "--overwrite" not in message and "delete" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda t: t / "model", "is the model folder"),
        (lambda t: t / "model" / "run", "lies inside the model folder"),
        (lambda t: t, "holds the model folder"),
        (lambda t: t / "data" / "run", "lies inside the data"),
        (lambda t: t / "checkout", "git checkout"),
        (lambda t: t / "link", "symbolic link"),
        (lambda t: t / "runs", "holds other runs (a/, b/)"),
        (lambda t: t / "study", "study folder"),
        (lambda t: REPO, "git checkout" if (REPO / ".git").exists() else "checkout"),
        (lambda t: REPO.parent, "holds the mathsft checkout"),
    ],
    ids=["model", "inside-model", "holds-model", "inside-data", "checkout", "link", "runs", "study", "repo",
         "above-repo"],  # fmt: skip
)
def test_folders_that_are_never_an_output(tmp_path, output, message):
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    fake_checkout(tmp_path / "checkout")
    (tmp_path / "link").symlink_to(tmp_path / "checkout")
    fake_run(tmp_path / "runs" / "a")
    fake_eval(tmp_path / "runs" / "b")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study_config.json").write_text("{}")
    reads = [("model folder", str(tmp_path / "model")), ("data", str(tmp_path / "data")), ("adapter", None)]
    with pytest.raises(UserError) as error:
        ownership.check_output_location(output(tmp_path), reads, "output_dir")
    assert message in str(error.value)


def test_a_new_folder_beside_the_inputs_is_fine(tmp_path):
    (tmp_path / "model").mkdir()
    fake_run(tmp_path / "runs" / "a")
    reads = [("model folder", str(tmp_path / "model")), ("data", "some/hub-dataset")]
    ownership.check_output_location(tmp_path / "runs" / "new", reads, "output_dir")
    ownership.check_output_location(tmp_path / "runs" / "a", reads, "output_dir")  # rerun or resume in place


# ---- through the scripts: training --------------------------------------------------------------------------------


def run_in(cwd: Path, *args: str) -> Result:
    """An entry script run from ``cwd`` (a user's folder, not the repository)."""
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=script_env(), capture_output=True, encoding="utf-8",
                          errors="replace", timeout=900)  # fmt: skip
    return Result(done.returncode, done.stdout, done.stderr, 0.0)


def absolute_train_args(output: str, *extra: str) -> list[str]:
    """``train_sft.py`` with every path absolute, to be run from any folder."""
    return [str(REPO / "train_sft.py"), "--config", ADAMW, "--model_name_or_path", str(SMOKE_TASK_MODEL),
            "--dataset_name", str(SMOKE_TASK_DATA), "--output_dir", output, "--max_steps", "1", *extra]  # fmt: skip


def test_output_dir_dot_in_a_checkout_is_refused(tmp_path):
    """Issue case 1: ``--output_dir . --overwrite true`` from a git checkout deleted the checkout."""
    checkout = fake_checkout(tmp_path / "checkout")
    before = snapshot(tmp_path)
    expect(run_in(checkout, *absolute_train_args(".", *OVERWRITE)), 2, "git checkout")
    assert_unchanged(before, snapshot(tmp_path))


@pytest.mark.slow
def test_output_dir_dot_in_a_folder_of_sources_is_refused(tmp_path):
    """The same without .git: the sources are foreign, named."""
    checkout = fake_checkout(tmp_path / "checkout")
    shutil.rmtree(checkout / ".git")
    before = snapshot(tmp_path)
    result = expect(run_in(checkout, *absolute_train_args(".", *OVERWRITE)), 2, "README.md, photos/, src/")
    assert "--overwrite" not in result.error_lines[0]
    assert_unchanged(before, snapshot(tmp_path))


def _with_user_files(t: Path) -> Path:
    return user_files(fake_run(t / "out"))


def _user_files_without_git(t: Path) -> Path:
    folder = _with_user_files(t)
    shutil.rmtree(folder / ".git")
    return folder


def _symlinked_output(t: Path) -> Path:
    fake_run(t / "elsewhere" / "old-run")
    (t / "out").symlink_to(t / "elsewhere" / "old-run")
    return t / "out"


def _link_inside(t: Path) -> Path:
    user_files(t / "precious")
    folder = fake_run(t / "out")
    (folder / "tensorboard").rename(folder / "tb-old")
    shutil.rmtree(folder / "tb-old")
    (folder / "tensorboard").symlink_to(t / "precious")
    return folder


def _runs_parent(t: Path) -> Path:
    fake_run(t / "runs" / "adamw")
    fake_eval(t / "runs" / "eval-base")
    return t / "runs"


def _copied_model(t: Path) -> Path:
    shutil.copytree(SMOKE_TASK_MODEL, t / "model")
    return t / "model"


def _user_model(t: Path) -> Path:
    shutil.copytree(SMOKE_MODEL, t / "my-model")  # a model of the user's, not the one this run reads
    return t / "my-model"


def _checkpoint_with_notes(t: Path) -> Path:
    folder = fake_run(t / "out")
    (folder / "checkpoint-2" / "notes.txt").write_text("my notes on step 2\n")
    return folder


# (the output folder, extra flags, what the one line names); every case passes --overwrite true
TRAINING_CASES = [
    pytest.param(_user_files_without_git, [], "photos/, thesis.tex", id="thesis-photos"),
    pytest.param(_with_user_files, [], "git checkout", id="thesis-photos-git"),
    pytest.param(_symlinked_output, [], "symbolic link", id="symlinked-output-dir"),
    pytest.param(_link_inside, [], "tensorboard ->", id="link-inside"),
    pytest.param(_runs_parent, [], "other runs (adamw/, eval-base/)", id="parent-of-runs"),
    pytest.param(_copied_model, ["--model_name_or_path", "{model}"], "is the model folder", id="model-folder"),
    pytest.param(lambda t: _copied_model(t) / "run", ["--model_name_or_path", "{model}"], "lies inside the model",
                 id="inside-model-folder"),  # fmt: skip
    pytest.param(lambda t: t / "data" / "run", ["--dataset_name", "{data}"], "lies inside the data", id="inside-data"),
    pytest.param(lambda t: t, ["--dataset_name", "{data}"], "holds the data", id="holds-data"),
    pytest.param(_user_model, [], "with no run_identity.json", id="a-model-of-the-users"),
    pytest.param(_checkpoint_with_notes, [], "checkpoint-2/notes.txt", id="file-in-a-checkpoint"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("make", "flags", "message"), TRAINING_CASES)
def test_training_overwrite_removes_only_its_own(tmp_path, make, flags, message):
    shutil.copytree(SMOKE_TASK_DATA, tmp_path / "data")
    output = make(tmp_path)
    model = tmp_path / "model" if (tmp_path / "model").exists() else SMOKE_TASK_MODEL
    flags = [f.format(model=model, data=tmp_path / "data") for f in flags]
    args = train_args(output, "--model_name_or_path", str(SMOKE_TASK_MODEL), *flags, *OVERWRITE)
    result = refused(args, message, tmp_path)
    assert "--overwrite" not in result.error_lines[0] and "delete" not in result.error_lines[0]


@pytest.mark.slow
def test_overwrite_of_a_real_run_removes_its_files_and_nothing_else(tmp_path):
    """The positive case: a finished run of ours, beside a user's files, is replaced by --overwrite true."""
    runs = tmp_path / "runs"
    output = runs / "run"
    expect(run(*train_args(output)), 0)
    (runs / "notes.txt").write_text("beside the run, not in it\n")
    fake_run(runs / "sibling")
    old = {p.name for p in output.rglob("*") if p.parent.name == "tensorboard"}
    outside = snapshot(runs / "notes.txt", runs / "sibling")
    expect(run(*train_args(output, "--learning_rate", "0.002", *OVERWRITE)), 0)
    assert_unchanged(outside, snapshot(runs / "notes.txt", runs / "sibling"))
    assert not old & {p.name for p in (output / "tensorboard").iterdir()}, "old TensorBoard events were kept"
    assert json.loads((output / "run_summary.json").read_text())["hyperparameters"]["learning_rate"] == 0.002
    assert ownership.inventory(output, ownership.TRAINING_FOLDER).foreign == []


# ---- through the scripts: evaluation ------------------------------------------------------------------------------


def test_eval_summary_without_its_config_is_foreign(tmp_path):
    """A ``summary.json`` without ``eval_config.json`` beside it is not ours: refused, with --overwrite too."""
    output = tmp_path / "eval"
    output.mkdir()
    (output / "summary.json").write_text('{"accuracy": 0.93, "note": "my numbers from another tool"}\n')
    result = refused(eval_args(output, *OVERWRITE), "summary.json with no eval_config.json", tmp_path)
    assert "--overwrite" not in result.error_lines[0]


def _eval_with_user_files(t: Path) -> Path:
    folder = fake_eval(t / "eval")
    (folder / "thesis.tex").write_text("\\chapter{Results}\n")
    return folder


def _adapter_copy(t: Path) -> Path:
    shutil.copytree(SMOKE_MODEL, t / "model")
    return t / "model"


EVAL_CASES = [
    pytest.param(_eval_with_user_files, [], "thesis.tex", id="user-file"),
    pytest.param(lambda t: (fake_eval(t / "eval"), (t / "eval" / "eval_config.json").unlink(), t / "eval")[-1], [],
                 "generations.jsonl with no eval_config.json", id="generations-without-config"),  # fmt: skip
    pytest.param(_adapter_copy, ["--model", "{model}"], "is the model folder", id="output-is-model"),
    pytest.param(lambda t: _adapter_copy(t) / "eval", ["--model", "{model}"], "lies inside the model",
                 id="output-inside-model"),  # fmt: skip
    pytest.param(lambda t: t / "data", ["--dataset", "{data}"], "is the data", id="output-is-data"),
    pytest.param(lambda t: (fake_eval(t / "old"), (t / "eval").symlink_to(t / "old"), t / "eval")[-1], [],
                 "symbolic link", id="symlinked-output"),  # fmt: skip
    pytest.param(lambda t: user_files(t / "eval"), [], "git checkout", id="checkout"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("make", "flags", "message"), EVAL_CASES)
def test_eval_overwrite_removes_only_its_own(tmp_path, make, flags, message):
    shutil.copytree(SMOKE_DATA, tmp_path / "data")
    output = make(tmp_path)
    args = eval_args(output, *[f.format(model=tmp_path / "model", data=tmp_path / "data") for f in flags], *OVERWRITE)
    refused(args, message, tmp_path)


# ---- through the scripts: the study -------------------------------------------------------------------------------

STUDY = ["run_study.py", "--config", "studies/smoke.yaml"]


def _stage(study: Path, record: bool = True) -> Path:
    """The study's base evaluation folder, as a run that failed before any result leaves it, plus ``record``."""
    stage = study / "eval" / "base"
    stage.mkdir(parents=True)
    if record:
        (stage / "stage_config.json").write_text('{"stage": "eval", "name": "base", "command": ["older"]}\n')
        (stage / "stage.log").write_text("started\n")
    return stage


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_study_stage_folder_with_a_user_file_is_refused(tmp_path, overwrite):
    """A stage folder without results was removed whole, a user's file with it."""
    study = tmp_path / "study"
    (_stage(study) / "thesis.tex").write_text("\\chapter{Method}\n")
    args = [*STUDY, "--study_dir", str(study), *(OVERWRITE if overwrite else ())]
    refused(args, "thesis.tex", tmp_path)


@pytest.mark.slow
def test_study_stage_folder_of_someone_else_is_refused_with_overwrite(tmp_path):
    """A stage folder holding an evaluation that this study did not start (no stage_config.json) is not the study's."""
    study = tmp_path / "study"
    fake_eval(_stage(study, record=False))
    refused([*STUDY, "--study_dir", str(study), *OVERWRITE], "stage_config.json", tmp_path)


def test_study_cleans_only_its_own_leftovers(tmp_path):
    """A stage that failed before any result: its own files go, a link in it is refused and its target kept."""
    from mathsft.study import Stage, _stage_entries

    stage_dir = _stage(tmp_path / "study")
    (stage_dir / "eval_config.json").write_text("{}")
    stage = Stage("eval", "base", "eval base", stage_dir, {}, [], [])
    ownership.remove(_stage_entries(stage))
    assert list(stage_dir.iterdir()) == []
    user_files(tmp_path / "precious")
    (stage_dir / "stage_config.json").write_text('{"stage": "eval"}')
    (stage_dir / "photos").symlink_to(tmp_path / "precious" / "photos")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"photos ->"):
        _stage_entries(stage)
    assert_unchanged(before, snapshot(tmp_path))


def test_a_link_as_stage_folder_is_refused(tmp_path):
    from mathsft.study import Stage, _stage_entries

    fake_eval(tmp_path / "elsewhere")
    (tmp_path / "study" / "eval").mkdir(parents=True)
    (tmp_path / "study" / "eval" / "base").symlink_to(tmp_path / "elsewhere")
    stage = Stage("eval", "base", "eval base", tmp_path / "study" / "eval" / "base", {}, [], [])
    with pytest.raises(UserError, match="symbolic link"):
        _stage_entries(stage)


# ---- the report folder --------------------------------------------------------------------------------------------


def _earlier_report(folder: Path) -> Path:
    """The files an earlier ``make_report.py`` left (their opening lines as the report writes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text("# Fine-tuning `m` with adamw\n\nBuilt by `make_report.py` from `runs/a`.\n")
    (folder / "accuracy.md").write_text("# Accuracy\n")
    (folder / "resources.md").write_text("# Resources\n")
    (folder / "loss_train.png").write_bytes(b"\x89PNG\r\n\x1a\n tEXtSoftware Matplotlib version3")
    (folder / "figures.json").write_text('{"loss_train.png": {}, "loss_val.png": {}}\n')
    (folder / "problem_diff.jsonl").write_text("")
    return folder


def test_report_replaces_only_its_own_files(tmp_path):
    folder = _earlier_report(tmp_path / "report")
    (folder / "thesis.tex").write_text("mine\n")  # not a report file: never touched, no reason to refuse
    ownership.refuse_report_clashes(folder)
    (folder / "accuracy.md").write_text("# My accuracy notes\n")
    (folder / "loss_val.png").symlink_to(folder / "thesis.tex")
    with pytest.raises(UserError, match=r"holds accuracy\.md, loss_val\.png, which make_report\.py did not write"):
        ownership.refuse_report_clashes(folder)


@pytest.mark.parametrize("figure", ["lr_sensitivity.png", "accuracy_by_step.png"])
def test_report_keeps_a_users_figure_of_a_new_report_name(tmp_path, figure):
    folder = _earlier_report(tmp_path / "report")
    (folder / figure).write_bytes(b"\x89PNG\r\n\x1a\n my own plot")
    with pytest.raises(UserError, match=rf"holds {figure}, which make_report\.py did not write"):
        ownership.refuse_report_clashes(folder)
    (folder / figure).write_bytes(b"\x89PNG\r\n\x1a\n tEXtSoftware Matplotlib version3")  # an earlier report's
    ownership.refuse_report_clashes(folder)


@pytest.mark.slow
def test_make_report_keeps_a_users_report(tmp_path):
    from test_safety import _eval_source

    source = _eval_source(tmp_path)
    report = tmp_path / "thesis"
    user_files(report)
    (report / "report.md").write_text("# Chapter 4: my own report\n")
    refused(["make_report.py", str(source), "--output", str(report)], "report.md", report)
