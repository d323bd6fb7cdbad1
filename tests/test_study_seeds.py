"""The study's seed axis, equal tuning budgets, checkpoint evaluations, run names that cannot collide, and a refused
study that changes nothing (issues 16 and 17, study side).

The fast tests plan studies (dry runs) or run them on fake finished stage folders built from the study's own plan
and ``summary_factory``, so that no stage runs; one slow test trains and evaluates for real."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from test_study import _fails_with  # one study refusal check: exit 2, one error line

import run_study
from conftest import REPO, run_cli
from mathsft import artifacts
from mathsft.artifacts import select_best, select_best_grid_point
from mathsft.identity import IDENTITY_FILE
from mathsft.run_dir import mark_checkpoint_complete
from mathsft.study import Study, parse_study_args
from summary_factory import eval_summary, run_summary, write_json

SMOKE = ["--config", "studies/smoke.yaml"]


def _summary(method: str, lr: float, final: float, **overrides):
    return run_summary(method, lr=lr, val=(final + 1.0, final), cuda=False, **overrides)


# ---- the best grid point ------------------------------------------------------------------------------------------


def test_best_rate_is_picked_on_the_seed_mean() -> None:
    # lr 0.1 has the single best seed (0.5) but the worse mean (1.25 vs 1.0).
    runs = [((0.1, None), _summary("sgd", 0.1, 0.5)), ((0.1, None), _summary("sgd", 0.1, 2.0)),
            ((0.3, None), _summary("sgd", 0.3, 0.9)), ((0.3, None), _summary("sgd", 0.3, 1.1))]  # fmt: skip
    assert select_best_grid_point(runs) == (0.3, None)
    assert artifacts.grid_point_losses(runs) == {(0.1, None): 1.25, (0.3, None): 1.0}


def test_a_grid_point_needs_every_seed_finished() -> None:
    good = [((0.3, None), _summary("sgd", 0.3, 1.0)), ((0.3, None), _summary("sgd", 0.3, 1.0))]
    for broken in (None, _summary("sgd", 0.1, 0.1, diverged=True, diverged_step=5),
                   _summary("sgd", 0.1, 0.1, interrupted=True), _summary("sgd", 0.1, float("nan"))):  # fmt: skip
        runs = [((0.1, None), _summary("sgd", 0.1, 0.1)), ((0.1, None), broken), *good]
        assert select_best_grid_point(runs) == (0.3, None), broken
    assert select_best_grid_point([((0.1, None), None)]) is None
    tie = [((0.3, None), _summary("sgd", 0.3, 1.0)), ((0.1, None), _summary("sgd", 0.1, 1.0))]
    assert select_best_grid_point(tie) == (0.1, None)  # ties go to the smaller rate
    ranks = [((0.1, 32), _summary("lora", 0.1, 1.0)), ((0.1, 8), _summary("lora", 0.1, 1.0))]
    assert select_best_grid_point(ranks) == (0.1, 8)  # then to the smaller rank


def test_with_one_seed_the_pick_is_select_best() -> None:
    rng = random.Random(0)
    for _ in range(60):
        rates = rng.sample([0.01, 0.03, 0.1, 0.3, 1.0], k=rng.randint(1, 5))
        runs = {}
        for lr in rates:
            final = rng.choice([0.5, 1.0, 1.5, float("nan")])  # ties and non-finite losses too
            runs[f"sgd-lr{lr}"] = (lr, None if rng.random() < 0.1 else _summary("sgd", lr, final))
        by_point = select_best_grid_point([((lr, None), summary) for lr, summary in runs.values()])
        by_name = select_best([(name, summary) for name, (_, summary) in runs.items()])
        assert (by_point and f"sgd-lr{by_point[0]}") == by_name


# ---- planning: names, seeds, budgets -------------------------------------------------------------------------------


def test_seeds_plan_one_run_per_seed_with_its_own_folder(capsys, tmp_path: Path) -> None:
    argv = [*SMOKE, "--study_dir", str(tmp_path / "s"), "--dry_run", "true", "--seeds", "[1, 2]"]
    run_study.main(argv)
    out = capsys.readouterr().out
    for name in ("adamw-lr3e-4", "adamw-lr1e-3", "sgd-lr0.1", "sgd-lr0.3", "lora-lr3e-3", "lora-lr0.01"):
        for seed in (1, 2):
            run = tmp_path / "s" / "train" / f"{name}-seed{seed}"
            assert f"--output_dir {run} --learning_rate " in out and f"seed={seed} ... to run" in out
    assert out.count("--seed 1") == 6 and out.count("--seed 2") == 6 and "--split_seed" not in out
    assert "tuning budget: adamw 2 trials x 2 seeds, sgd 2 trials x 2 seeds, lora 2 trials x 2 seeds" in out
    assert "eval sgd-seed2 ... after training" in out and "unequal" not in out
    assert not (tmp_path / "s").exists()

    # Without seeds: today's names and commands, no --seed.
    run_study.main([*SMOKE, "--study_dir", str(tmp_path / "t"), "--dry_run", "true"])
    out = capsys.readouterr().out
    assert f"--output_dir {tmp_path / 't' / 'train' / 'sgd-lr0.3'} --learning_rate 0.3\n" in out
    assert "--seed" not in out and "seed=" not in out


def test_stage_records_name_their_seed(tmp_path: Path) -> None:
    study = Study(parse_study_args([*SMOKE, "--study_dir", str(tmp_path), "--seeds", "[7]", "--methods", "lora"]))
    run = study.runs[0]
    assert study.train_stage(run).record["seed"] == 7 and run.name == "lora-lr3e-3-seed7"
    record = study.final_eval_stage(run).record
    assert (record["name"], record["method"], record["seed"], record["step"]) == ("lora-seed7", "lora", 7, None)
    base = study.eval_stage(artifacts.BASE_EVAL, None).record
    assert (base["method"], base["seed"], base["step"]) == (None, None, None)


def test_colliding_run_names_and_bad_seeds_are_refused(capsys, tmp_path: Path) -> None:
    study = tmp_path / "s"
    argv = [*SMOKE, "--study_dir", str(study)]
    _fails_with(capsys, [*argv, "--learning_rates", '{"sgd": [0.001, 0.0010000001]}'],
                "learning_rates.sgd: 0.001 and 0.0010000001 give one run name, sgd-lr1e-3")  # fmt: skip
    _fails_with(capsys, [*argv, "--learning_rates", '{"adamw": [0.1, 0.10000001]}'], "give one run name, adamw-lr0.1")
    _fails_with(capsys, [*argv, "--seeds", "[1, 1]"], "seeds lists a seed twice")
    _fails_with(capsys, [*argv, "--seeds", "[1.5]"], "seeds: 1.5 is not an integer")
    _fails_with(capsys, [*argv, "--seeds", "[-1]"], "seeds: -1 is not an integer between 0 and")
    _fails_with(capsys, [*argv, "--seeds", "[1", "--dry_run", "true"], "seeds is not a JSON list")
    _fails_with(capsys, [*argv, "--seeds", "[1]", "--train_overrides", '{"seed": 3}'], "may not set 'seed'")
    overrides = ["--eval_checkpoints", "true", "--train_overrides", '{"save_total_limit": 3}']
    _fails_with(capsys, [*argv, *overrides], "may not set 'save_total_limit'")
    assert not study.exists()


def test_every_planned_stage_folder_is_unique(tmp_path: Path) -> None:
    argv = [*SMOKE, "--study_dir", str(tmp_path), "--seeds", "[1, 2, 3]", "--lora_ranks", "8", "16"]
    study = Study(parse_study_args(argv))
    stages = [study.train_stage(run) for run in study.runs] + [study.final_eval_stage(run) for run in study.runs]
    train = {stage.directory for stage in stages if stage.kind == "train"}
    assert len(train) == len(study.runs) == 2 * 3 + 2 * 3 + 2 * 2 * 3
    finals = {stage.directory.name for stage in stages if stage.kind == "eval"}
    assert finals == {f"{m}-seed{s}" for m in ("adamw", "sgd", "lora") for s in (1, 2, 3)}


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "studies").glob("*.yaml")))
def test_shipped_studies_give_every_method_the_same_number_of_trials(config: str, tmp_path: Path) -> None:
    study = Study(parse_study_args(["--config", f"studies/{config}", "--study_dir", str(tmp_path)]))
    trials = {method: study.trials(method) for method in study.config.methods}
    assert len(study.config.methods) == 3 and len(set(trials.values())) == 1, trials
    assert min(trials.values()) >= 2, trials  # a sweep, so the best-rate pick is exercised


# ---- fake finished studies ----------------------------------------------------------------------------------------


def _fake_finished_study(argv: list[str], finals: dict[str, float]) -> Study:
    """Every training stage and the base evaluation as the study would have left them, finished; ``finals`` holds
    each run's final validation loss (by name)."""
    study = Study(parse_study_args(argv))
    for run in study.runs:
        stage = study.train_stage(run)
        write_json(stage.directory / artifacts.STAGE_CONFIG, stage.record)
        summary = _summary(run.method, run.learning_rate, finals[run.name])
        summary["hyperparameters"]["model_name_or_path"] = "assets/smoke-task/model"
        write_json(stage.directory / artifacts.RUN_SUMMARY, summary)
    base = study.eval_stage(artifacts.BASE_EVAL, None)
    write_json(base.directory / artifacts.STAGE_CONFIG, base.record)
    write_json(base.directory / artifacts.EVAL_SUMMARY, eval_summary())
    write_json(base.directory / artifacts.EVAL_CONFIG, {})  # run_eval.py's record: the summary is its own
    return study


def _snapshot(root: Path) -> dict[str, str]:
    files = [path for path in root.rglob("*") if path.is_file()]
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def test_a_study_refused_at_a_best_run_evaluation_writes_nothing(capsys, tmp_path: Path) -> None:
    """eval/sgd scored sgd-lr0.1, but the best SGD rate is now 0.3: refused before anything is written, not after
    the training stages (study_config.json included)."""
    argv = [*SMOKE, "--study_dir", str(tmp_path), "--methods", "sgd"]
    study = _fake_finished_study(argv, {"sgd-lr0.1": 1.0, "sgd-lr0.3": 0.5})
    stale = study.final_eval_stage(next(run for run in study.runs if run.name == "sgd-lr0.1"))
    write_json(stale.directory / artifacts.STAGE_CONFIG, stale.record)
    write_json(stale.directory / artifacts.EVAL_SUMMARY, eval_summary())
    write_json(stale.directory / artifacts.EVAL_CONFIG, {})
    before = _snapshot(tmp_path)
    _fails_with(capsys, argv, "run: 'sgd-lr0.1' -> 'sgd-lr0.3'")
    assert _snapshot(tmp_path) == before and not (tmp_path / artifacts.STUDY_CONFIG).exists()

    # A grid that no longer holds the evaluated run, with a training still to do: refused before it trains.
    grid = [*argv, "--learning_rates", '{"sgd": [0.3, 0.2]}']
    _fails_with(capsys, grid, f"{stale.directory} was run with other settings (it scored sgd-lr0.1, not a run")
    assert _snapshot(tmp_path) == before


def test_a_torn_evaluation_summary_is_not_done(tmp_path: Path) -> None:
    argv = [*SMOKE, "--study_dir", str(tmp_path), "--methods", "adamw"]
    study = _fake_finished_study(argv, {"adamw-lr3e-4": 1.0, "adamw-lr1e-3": 0.5})
    stage = study.final_eval_stage(study.best_runs("adamw", study._summaries())[0])
    write_json(stage.directory / artifacts.STAGE_CONFIG, stage.record)
    write_json(stage.directory / artifacts.EVAL_CONFIG, {})
    (stage.directory / artifacts.EVAL_SUMMARY).write_text(json.dumps(eval_summary())[:200])  # truncated
    assert study._status(stage) == ("resume", None)
    write_json(stage.directory / artifacts.EVAL_SUMMARY, eval_summary())
    assert study._status(stage) == ("done", None)


def test_old_stage_records_without_the_new_keys_still_match(tmp_path: Path) -> None:
    argv = [*SMOKE, "--study_dir", str(tmp_path), "--methods", "adamw"]
    study = _fake_finished_study(argv, {"adamw-lr3e-4": 1.0, "adamw-lr1e-3": 0.5})
    stage = study.train_stage(study.runs[0])
    old = {key: value for key, value in stage.record.items() if key != "seed"}  # written before seeds existed
    write_json(stage.directory / artifacts.STAGE_CONFIG, old)
    assert study._status(stage) == ("done", None)


def test_eval_checkpoints_plans_one_stage_per_complete_checkpoint(tmp_path: Path) -> None:
    argv = [*SMOKE, "--study_dir", str(tmp_path), "--methods", "adamw", "lora", "--eval_checkpoints", "true",
            "--seeds", "[3]"]  # fmt: skip
    finals = {"adamw-lr3e-4-seed3": 1.0, "adamw-lr1e-3-seed3": 0.5, "lora-lr3e-3-seed3": 0.4, "lora-lr0.01-seed3": 0.6}
    study = _fake_finished_study(argv, finals)
    assert all(study.train_stage(run).command[-2:] == ["--save_total_limit", "0"] for run in study.runs)
    identity = {"run": "fake"}
    for run in study.runs:
        run_dir = tmp_path / "train" / run.name
        write_json(run_dir / IDENTITY_FILE, identity)
        for step in (50, 100, 135):
            checkpoint = run_dir / f"checkpoint-{step}"
            checkpoint.mkdir()
            (checkpoint / "model.safetensors").write_bytes(b"weights")
            if step != 100:  # checkpoint-100 never got its completion marker
                mark_checkpoint_complete(checkpoint, identity, step)
    adamw, lora = study.best_runs("adamw", study._summaries())[0], study.best_runs("lora", study._summaries())[0]
    assert (adamw.name, lora.name) == ("adamw-lr1e-3-seed3", "lora-lr3e-3-seed3")
    stages = study.checkpoint_eval_stages(adamw)
    assert [stage.directory for stage in stages] == [tmp_path / "eval" / f"adamw-seed3-step{n}" for n in (50, 135)]
    assert [stage.record["step"] for stage in stages] == [50, 135]
    assert all(stage.record["run"] == adamw.name and stage.record["seed"] == 3 for stage in stages)
    command = stages[0].command
    assert command[command.index("--model") + 1] == str(tmp_path / "train" / adamw.name / "checkpoint-50")
    lora_command = study.checkpoint_eval_stages(lora)[1].command
    assert lora_command[lora_command.index("--model") + 1] == "assets/smoke-task/model"
    assert lora_command[lora_command.index("--adapter") + 1] == str(tmp_path / "train" / lora.name / "checkpoint-135")
    # The same stages are planned before anything runs, so a changed one is refused then.
    known = [stage.directory.name for stage in study._evaluations_known_now([study.train_stage(r) for r in study.runs])]
    assert known == ["adamw-seed3", "adamw-seed3-step50", "adamw-seed3-step135",
                     "lora-seed3", "lora-seed3-step50", "lora-seed3-step135"]  # fmt: skip


# ---- for real -----------------------------------------------------------------------------------------------------

# As small as a real study gets (each stage is a process that loads torch): LoRA only, whose checkpoints are adapters
# (a full model's checkpoint is planned the same way, see above); 2 steps, a checkpoint at step 2, 2 problems.
TINY = [
    "--methods", "lora", "--learning_rates", json.dumps({"lora": [1e-2]}),
    "--train_overrides", json.dumps({"max_steps": 2, "save_steps": 2, "eval_steps": 1, "logging_steps": 1,
                                     "max_train_samples": 32, "max_eval_samples": 16}),
    "--evaluation", json.dumps({"limit": 2, "max_new_tokens": 8}),
]  # fmt: skip


def _losses(run: Path) -> list[list[float]]:
    summary = json.loads((run / artifacts.RUN_SUMMARY).read_text())
    return summary["train_loss"] + summary["eval_loss"]


@pytest.mark.slow
def test_seeds_and_checkpoint_evaluations_end_to_end(tmp_path: Path) -> None:
    study, report = tmp_path / "study", tmp_path / "report"
    argv = ["run_study.py", *SMOKE, "--study_dir", str(study), "--report_dir", str(report), *TINY,
            "--seeds", "[1, 2]", "--eval_checkpoints", "true"]  # fmt: skip
    first = run_cli(*argv, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "tuning budget: lora 1 trial x 2 seeds" in first.stdout

    # Different seeds train differently; the split stays the same.
    one, two = study / "train" / "lora-lr0.01-seed1", study / "train" / "lora-lr0.01-seed2"
    assert _losses(one) != _losses(two)
    assert (one / artifacts.VALIDATION_IDS).read_text() == (two / artifacts.VALIDATION_IDS).read_text()
    assert json.loads((two / artifacts.RUN_SUMMARY).read_text())["hyperparameters"]["seed"] == 2

    # The same seed trains the same: the seed-1 command again, into another folder.
    command = json.loads((one / artifacts.STAGE_CONFIG).read_text())["command"]
    again = tmp_path / "again"
    command[command.index("--output_dir") + 1] = str(again)
    rerun = run_cli(*command[1:])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _losses(again) == _losses(one)

    # One final evaluation per seed, and one per checkpoint of its run.
    for seed in (1, 2):
        final = json.loads((study / "eval" / f"lora-seed{seed}" / artifacts.STAGE_CONFIG).read_text())
        assert (final["run"], final["method"], final["seed"], final["step"]) == (f"lora-lr0.01-seed{seed}", "lora",
                                                                                  seed, None)  # fmt: skip
        folder = study / "eval" / f"lora-seed{seed}-step2"
        record = json.loads((folder / artifacts.STAGE_CONFIG).read_text())
        assert (record["run"], record["seed"], record["step"]) == (final["run"], seed, 2)
        evaluated = artifacts.read_eval_summary(folder)
        assert evaluated is not None and evaluated["adapter"] == str(study / "train" / final["run"] / "checkpoint-2")
    assert json.loads((study / artifacts.STUDY_CONFIG).read_text())["seeds"] == [1, 2]

    # A torn summary.json is re-summarised on the next run, not reported done.
    torn = study / "eval" / "lora-seed2" / artifacts.EVAL_SUMMARY
    torn.write_text(torn.read_text()[:100])
    second = run_cli(*argv, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "eval lora-seed2 (lora-lr0.01-seed2) (resuming)" in second.stdout
    assert second.stdout.count("skipped (done)") == 1 + 2 + 2 + 2 - 1
    assert artifacts.read_eval_summary(torn.parent) is not None
