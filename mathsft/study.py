"""The optimizer study behind ``run_study.py``: every training run, the evaluations and the report, in one command.

Stages, each a subprocess writing into its own folder of the study dir (layout in ``docs/study.md``):

1. ``eval/base``: the base model on MATH-500 (first, so a broken eval setup fails before hours of training);
2. ``train/<method>-lr<lr>[-r<rank>][-seed<s>]``: ``train_sft.py`` for every method x learning rate (x LoRA rank)
   (x seed, with ``seeds``);
3. ``eval/<method>[-seed<s>]``: ``run_eval.py`` on the run(s) of each method's best grid point
   (``mathsft.artifacts.select_best_grid_point``: the lowest mean final validation loss over the seeds), and with
   ``eval_checkpoints`` ``eval/<method>[-seed<s>]-step<N>`` on each complete ``checkpoint-N`` of those runs;
4. the report (``mathsft.report``), rebuilt from the files every time.

Every stage folder gets ``stage_config.json`` (the exact command) and ``stage.log`` (its output). A stage whose
outputs exist and whose recorded command matches is skipped; an interrupted one resumes; one whose command changed
is refused unless ``--overwrite true``, so a config edit never silently mixes old and new results. Every check that
can be made before training (names, options, changed stages, the evaluations of methods whose runs are all done) is
made before the study writes anything, ``study_config.json`` included.
A stage that failed before any result is cleaned of the files the study and its script wrote, and only those
(``mathsft.ownership``); a stage folder holding anything else, or results without its ``stage_config.json``, is
refused in one line, with ``--overwrite`` too.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mathsft import artifacts, ownership
from mathsft.artifacts import EVAL_SUMMARY, GENERATIONS, RUN_SUMMARY, STAGE_CONFIG, STAGE_LOG, STUDY_CONFIG, read_json
from mathsft.errors import EXIT_DIVERGED, UserError
from mathsft.identity import IDENTITY_FILE, exclusive_output
from mathsft.progress import Progress, plural
from mathsft.stage_process import StageFailed, run_logged
from mathsft.study_config import StudyConfig, load_recipes, parse_study_args

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = "train_sft.py"
EVAL_SCRIPT = "run_eval.py"


def _cli_value(value: Any) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [str(value)]


def overrides_to_args(overrides: dict[str, Any]) -> list[str]:
    """``{"max_steps": 8, "packing": False}`` -> ``["--max_steps", "8", "--packing", "false"]``."""
    args: list[str] = []
    for key, value in overrides.items():
        args += [f"--{key}", *_cli_value(value)]
    return args


def _default(name: str) -> Any:
    from dataclasses import fields

    from mathsft.configs import MathSFTConfig

    return next(f.default for f in fields(MathSFTConfig) if f.name == name)


@dataclass
class TrainRun:
    """One training run of the grid."""

    method: str
    recipe: str
    learning_rate: float
    lora_r: int | None = None  # only when the study sweeps ranks
    lora_alpha: int | None = None
    seed: int | None = None  # only when the study sets seeds

    @property
    def name(self) -> str:
        return artifacts.run_name(self.method, self.learning_rate, self.lora_r, self.seed)

    @property
    def grid_point(self) -> artifacts.GridPoint:
        return (self.learning_rate, self.lora_r)

    @property
    def description(self) -> str:
        text = f"train {self.method} lr={artifacts.format_lr(self.learning_rate)}"
        text += f" r={self.lora_r}" if self.lora_r is not None else ""
        return text + (f" seed={self.seed}" if self.seed is not None else "")


@dataclass
class Stage:
    """A subprocess with its folder; ``record`` (the exact command) goes to ``stage_config.json``."""

    kind: str  # "train" or "eval"
    name: str
    description: str
    directory: Path
    record: dict[str, Any]
    command: list[str]  # what runs: absolute interpreter and script paths
    display: list[str]  # what a person would type: python train_sft.py ...


class Study:
    """A validated study config with its recipes loaded: plans and runs the stages."""

    def __init__(self, config: StudyConfig) -> None:
        self.config = config
        self.study_dir = Path(config.study_dir)
        self.recipes = load_recipes(config)
        self.runs = self._plan_runs()

    # ---- planning ----

    def _plan_runs(self) -> list[TrainRun]:
        runs = []
        for method in self.config.methods:
            recipe = self.recipes[method]
            default_rate = float(recipe.get("learning_rate", _default("learning_rate")))
            rates = self.config.rate_grids.get(method) or [default_rate]
            ranks: list[int | None] = [None]
            recipe_r = int(recipe.get("lora_r", 16))
            recipe_alpha = float(recipe.get("lora_alpha", 32))
            if recipe.get("use_peft") and self.config.lora_ranks:
                ranks = list(self.config.lora_ranks)
            for rate in rates:
                for rank in ranks:
                    # alpha scales with the rank so that alpha/r (the update scale) stays the recipe's
                    # (rounded: lora_alpha is an integer option).
                    alpha = None if rank is None else max(1, round(recipe_alpha * rank / recipe_r))
                    for seed in self.config.seed_list:
                        runs.append(TrainRun(method, self.config.recipe_paths[method], rate, rank, alpha, seed))
        refuse_name_collisions(runs)
        return runs

    def trials(self, method: str) -> int:
        """How many grid points (learning rate x rank) the method's search tries: its tuning budget."""
        return len({run.grid_point for run in self.runs if run.method == method})

    def base_model(self) -> str:
        if self.config.eval_settings.get("model"):
            return str(self.config.eval_settings["model"])
        models = {str(r.get("model_name_or_path")) for r in self.recipes.values()}
        if len(models) != 1:
            raise UserError(f"the recipes train different models ({', '.join(sorted(models))}); set evaluation.model")
        return models.pop()

    def system_prompt(self) -> str | None:
        prompts = {r.get("system_prompt") for r in self.recipes.values()}
        if len(prompts) != 1:
            raise UserError("the recipes use different system_prompt values; the study compares one prompt")
        return prompts.pop()

    def _launcher(self) -> tuple[list[str], list[str]]:
        """(command prefix, displayed prefix) of the training launcher."""
        if self.config.launcher == "python":
            return [sys.executable], ["python"]
        tail = ["--config_file", str(self.config.accelerate_config), "--num_processes", str(self.config.num_processes)]
        return [sys.executable, "-m", "accelerate.commands.launch", *tail], ["accelerate", "launch", *tail]

    def train_stage(self, run: TrainRun) -> Stage:
        directory = self.study_dir / artifacts.STUDY_TRAIN_DIR / run.name
        args = ["--config", run.recipe, "--output_dir", str(directory), "--learning_rate", repr(run.learning_rate)]
        if run.lora_r is not None:
            args += ["--lora_r", str(run.lora_r), "--lora_alpha", str(run.lora_alpha)]
        if run.seed is not None:  # initialisation of adapters, data order, dropout; not the split (split_seed)
            args += ["--seed", str(run.seed)]
        args += overrides_to_args(self.config.overrides)
        if self.config.eval_checkpoints:  # 0: no rotation (transformers deletes nothing), every checkpoint is evaluated
            args += ["--save_total_limit", "0"]
        prefix, shown = self._launcher()
        display = [*shown, TRAIN_SCRIPT, *args]
        record = {
            "stage": "train", "name": run.name, "method": run.method, "learning_rate": run.learning_rate,
            "lora_r": run.lora_r, "seed": run.seed, "recipe": run.recipe,
            # An edited recipe is a different run, even under the same path.
            "recipe_sha256": hashlib.sha256(Path(run.recipe).read_bytes()).hexdigest(),
            "command": display,
        }  # fmt: skip
        command = [*prefix, str(REPO_ROOT / TRAIN_SCRIPT), *args]
        return Stage("train", run.name, run.description, directory, record, command, display)

    def eval_stage(
        self, name: str, run_dir: Path | None, run: TrainRun | None = None, step: int | None = None
    ) -> Stage:
        """``base`` (run_dir None) or a method's best run (``run``), its final weights or those of its
        ``checkpoint-<step>``: full models directly, LoRA as base + adapter."""
        directory = self.study_dir / artifacts.STUDY_EVAL_DIR / name
        record: dict[str, Any] = {
            "stage": "eval", "name": name, "run": None, "run_finished_at": None,
            "method": run.method if run else None, "seed": run.seed if run else None, "step": step,
        }  # fmt: skip
        if run_dir is None:
            model_args, description = ["--model", self.base_model()], "eval base"
        else:
            summary = artifacts.read_run_summary(run_dir)
            hyper = summary["hyperparameters"] if summary else {}
            weights = run_dir if step is None else run_dir / f"{artifacts.CHECKPOINT_PREFIX}{step}"
            description = f"eval {name} ({weights.relative_to(run_dir.parent)})"
            if hyper.get("use_peft"):
                model_args = ["--model", str(hyper["model_name_or_path"]), "--adapter", str(weights)]
            else:
                model_args = ["--model", str(weights)]
            # A retrained run (same folder, new weights) must be re-evaluated.
            record |= {"run": run_dir.name, "run_finished_at": summary.get("finished_at") if summary else None}
        settings = {k: v for k, v in self.config.eval_settings.items() if k != "model"}
        if self.system_prompt():
            settings["system_prompt"] = self.system_prompt()
        args = [*model_args, "--output", str(directory), *overrides_to_args(settings)]
        display = ["python", EVAL_SCRIPT, *args]
        record["command"] = display
        command = [sys.executable, str(REPO_ROOT / EVAL_SCRIPT), *args]
        return Stage("eval", name, description, directory, record, command, display)

    # ---- the best runs and their evaluations ----

    def _run_dir(self, run: TrainRun) -> Path:
        return self.study_dir / artifacts.STUDY_TRAIN_DIR / run.name

    def _summaries(self) -> dict[str, artifacts.RunSummary | None]:
        return {run.name: artifacts.read_run_summary(self._run_dir(run)) for run in self.runs}

    def best_runs(self, method: str, summaries: dict[str, artifacts.RunSummary | None]) -> list[TrainRun]:
        """The runs (one per seed) of the method's best grid point (``artifacts.select_best_grid_point``)."""
        runs = [run for run in self.runs if run.method == method]
        best = artifacts.select_best_grid_point((run.grid_point, summaries[run.name]) for run in runs)
        return [run for run in runs if run.grid_point == best] if best is not None else []

    @staticmethod
    def final_eval_name(run: TrainRun) -> str:
        """``eval/<method>`` (one seed: today's layout) or ``eval/<method>-seed<s>``."""
        return run.method if run.seed is None else f"{run.method}-seed{run.seed}"

    def final_eval_stage(self, run: TrainRun) -> Stage:
        return self.eval_stage(self.final_eval_name(run), self._run_dir(run), run)

    def checkpoint_eval_stages(self, run: TrainRun) -> list[Stage]:
        """``eval/<method>[-seed<s>]-step<N>`` for every complete ``checkpoint-N`` of the run (a checkpoint whose
        marker is missing or whose files changed is not the weights of step N, and is left out)."""
        from mathsft.run_dir import checkpoint_problem

        run_dir = self._run_dir(run)
        identity = read_json(run_dir / IDENTITY_FILE)
        if identity is None:
            return []
        return [
            self.eval_stage(f"{self.final_eval_name(run)}-step{step}", run_dir, run, step)
            for step, path in artifacts.checkpoints(run_dir)
            if checkpoint_problem(path, identity) is None
        ]

    def _evaluations_known_now(self, train_stages: list[Stage]) -> list[Stage]:
        """The best-run evaluations that can be planned before anything runs: those of every method whose training
        stages are all finished (done or diverged). They are exactly the stages the study will run later."""
        status = {stage.name: self._status(stage)[0] for stage in train_stages}
        summaries = self._summaries()
        stages = []
        for method in self.config.methods:
            if all(status[run.name] in ("done", "diverged") for run in self.runs if run.method == method):
                best = self.best_runs(method, summaries)
                stages += [self.final_eval_stage(run) for run in best]
                if self.config.eval_checkpoints:
                    stages += [stage for run in best for stage in self.checkpoint_eval_stages(run)]
        return stages

    def _refuse_stale_evaluations(self) -> None:
        """An evaluation folder of a method that scored a run this study no longer plans will be redone whatever
        the training gives: refused now (unless --overwrite), not after hours of training."""
        if self.config.overwrite:
            return
        eval_dir = self.study_dir / artifacts.STUDY_EVAL_DIR
        planned = {run.name for run in self.runs}
        for name in {self.final_eval_name(run) for run in self.runs}:
            for directory in [eval_dir / name, *eval_dir.glob(f"{name}-step*")]:
                record = read_json(directory / STAGE_CONFIG)
                results = (directory / EVAL_SUMMARY).is_file() or (directory / GENERATIONS).is_file()
                if results and record is not None and record.get("run") not in planned:
                    raise UserError(
                        f"{directory} was run with other settings (it scored {record.get('run')}, not a run of this "
                        "study any more); pass --overwrite true to redo that stage, or use another --study_dir"
                    )

    # ---- running ----

    def run(self) -> Path | None:
        """Run (or skip) every stage and write the report; returns the report path (None on a dry run)."""
        c = self.config
        train_stages = [self.train_stage(run) for run in self.runs]
        base_stage = self.eval_stage(artifacts.BASE_EVAL, None)
        first: dict[tuple[str, int | None], TrainRun] = {}
        for run in self.runs:
            first.setdefault((run.method, run.seed), run)
        finals = list(first.values())  # one run per (method, seed): one final evaluation each
        progress = Progress(len(train_stages) + 1 + len(finals), stream=c.stream)
        self._announce(train_stages, finals)
        for run, stage in zip(self.runs, train_stages, strict=True):  # before anything is written
            check_training_stage(stage, self.recipes[run.method], c.eval_settings)
        final_stages = [self.final_eval_stage(run) for run in finals]  # their folders, for the name check
        refuse_shared_folders([base_stage, *train_stages, *final_stages])
        known = self._evaluations_known_now(train_stages)
        self._refuse_changed([base_stage, *train_stages, *known])
        self._refuse_stale_evaluations()
        if c.dry_run:
            self._dry_run([base_stage, *train_stages], progress)
            return None
        artifacts.check_writable_dir(self.study_dir, "study_dir")
        artifacts.check_writable_dir(c.report_path, "report_dir")
        with exclusive_output(self.study_dir, "study"):
            # Written only now that every check has passed: a refused study changes nothing.
            plan = asdict(c) | {"runs": [r.name for r in self.runs]}
            artifacts.write_json_atomic(self.study_dir / STUDY_CONFIG, plan)
            for stage in [base_stage, *train_stages]:
                self._run_stage(stage, progress)
            self._evaluate_best_runs(progress)

            from mathsft.report import write_report

            report = write_report([self.study_dir], c.report_path, log_scale=c.log_scale)
        print(f"report: {report}", flush=True)
        return report

    def _announce(self, train_stages: list[Stage], finals: list[TrainRun]) -> None:
        c = self.config
        evaluations = ", ".join(["base", *(self.final_eval_name(run) for run in finals)])
        checkpoints = " and every checkpoint of the best runs" if c.eval_checkpoints else ""
        print(
            f"study {self.study_dir}: {plural(len(train_stages), 'training run')} "
            f"({', '.join(r.name for r in self.runs)}), {plural(1 + len(finals), 'evaluation')} "
            f"({evaluations}){checkpoints}; logs: <stage dir>/{STAGE_LOG}",
            flush=True,
        )
        seeds = len(c.seed_list)
        budget = {method: self.trials(method) for method in c.methods}
        print(
            "      tuning budget: "
            + ", ".join(f"{m} {plural(n, 'trial')} x {plural(seeds, 'seed')}" for m, n in budget.items())
            + " (a trial is one learning rate, x rank with lora_ranks)",
            flush=True,
        )
        if len(set(budget.values())) > 1:
            print("      note: unequal tuning budgets; a method with more trials has more chances at a low validation "
                  "loss, which favours it in the comparison", flush=True)  # fmt: skip

    def _dry_run(self, stages: list[Stage], progress: Progress) -> None:
        methods = self.config.methods
        if self.config.eval_checkpoints:
            progress.total += len(methods)
        for stage in stages:
            self._run_stage(stage, progress)
        seeds = [seed for seed in self.config.seed_list if seed is not None]
        rule = "the runs of the learning rate with the lowest mean final val loss over seeds" if seeds else \
            "the best of its runs (lowest final val loss)"  # fmt: skip
        for method in methods:
            for seed in self.config.seed_list:
                name = method if seed is None else f"{method}-seed{seed}"
                progress.line(f"eval {name}", f"after training: {rule}")
        for method in methods if self.config.eval_checkpoints else []:
            progress.line(f"eval {method} checkpoints", "after training: every complete checkpoint of its best run(s)")

    def _refuse_changed(self, stages: list[Stage]) -> None:
        """A stage with results from other settings is refused (one line) unless --overwrite, before any write."""
        for stage in stages:
            status, detail = self._status(stage)  # refuses a folder that is not this study's, with --overwrite too
            if status == "changed" and not self.config.overwrite:
                raise UserError(
                    f"{stage.directory} was run with other settings ({detail}); "
                    "pass --overwrite true to redo that stage, or use another --study_dir"
                )

    def _evaluate_best_runs(self, progress: Progress) -> None:
        summaries = self._summaries()
        checkpoint_stages: list[Stage] = []
        for method in self.config.methods:
            candidates = [(run.name, summaries[run.name]) for run in self.runs if run.method == method]
            diverged = [name for name, summary in candidates if summary and summary.get("diverged")]
            if diverged:
                print(f"      {method}: {', '.join(diverged)} diverged; left out of the best-run pick", flush=True)
            best = self.best_runs(method, summaries)
            if not best:
                for _ in self.config.seed_list:
                    progress.line(f"eval {method}", "skipped: no learning rate finished with a finite validation loss")
                continue
            self._print_best(method, best, summaries, len(candidates))
            for run in best:
                self._run_stage(self.final_eval_stage(run), progress)
            if self.config.eval_checkpoints:
                checkpoint_stages += [stage for run in best for stage in self.checkpoint_eval_stages(run)]
        if checkpoint_stages:
            refuse_shared_folders(checkpoint_stages)
            progress.total += len(checkpoint_stages)
            for stage in checkpoint_stages:
                self._run_stage(stage, progress)

    def _print_best(
        self, method: str, best: list[TrainRun], summaries: dict[str, artifacts.RunSummary | None], candidates: int
    ) -> None:
        if candidates == 1:
            return
        losses = [artifacts.final_val_loss(summaries[run.name]) or 0.0 for run in best]
        if best[0].seed is None:
            print(f"      best {method}: {best[0].name} (final validation loss {losses[0]:.4f})", flush=True)
            return
        point = best[0].description.split(" ", 2)[2].rsplit(" seed=", 1)[0]
        mean = sum(losses) / len(losses)
        print(f"      best {method}: {point} (mean final validation loss {mean:.4f} over "
              f"{plural(len(best), 'seed')}: {', '.join(run.name for run in best)})", flush=True)  # fmt: skip

    def _status(self, stage: Stage) -> tuple[str, str | None]:
        """``done``, ``resume`` (with a checkpoint for training), ``todo`` or ``changed`` (with the differences)."""
        directory = stage.directory
        if not _stage_entries(stage):
            return "todo", None
        if not _has_results(stage):
            return "todo", None  # a stage that failed before writing any result simply runs again
        recorded = read_json(directory / STAGE_CONFIG)
        if recorded is None:
            return "changed", f"{directory} exists but has no {STAGE_CONFIG}"
        expected = json.loads(json.dumps(stage.record))
        # A record written before a key existed (seed, method, step) matches that key's null value.
        recorded = {key: None for key, value in expected.items() if value is None} | recorded
        if recorded != expected:
            return "changed", describe_changes(recorded, expected)
        if stage.kind == "train":
            summary = artifacts.read_run_summary(directory)  # wrong types: a "corrupt:" error, not a crash
            if summary is not None and summary.get("diverged"):
                return "diverged", None
            if summary is not None and not summary.get("interrupted"):
                return "done", None
            return "resume", None
        # A torn summary.json (a crash mid-write, a truncated copy) is not done: run_eval.py resumes and rewrites it.
        return ("done", None) if artifacts.read_eval_summary(directory) is not None else ("resume", None)

    def _run_stage(self, stage: Stage, progress: Progress) -> None:
        status, detail = self._status(stage)
        command = list(stage.command)
        if status in ("done", "diverged"):
            progress.line(stage.description, "skipped (done)" if status == "done" else "skipped (diverged)")
            return
        if status == "changed":
            if not self.config.overwrite:
                raise UserError(
                    f"{stage.directory} was run with other settings ({detail}); "
                    "pass --overwrite true to redo that stage, or use another --study_dir"
                )
            command += ["--overwrite", "true"]  # the script removes the old results first
        if status == "resume" and stage.kind == "train":
            command += ["--resume_from_checkpoint", "true"]  # its newest complete checkpoint of this very run
        if self.config.dry_run:
            what = {"todo": "to run", "resume": "to resume", "changed": "to redo (--overwrite)"}[status]
            progress.line(stage.description, f"{what}: {' '.join(stage.display)}")
            return
        note = {"resume": " (resuming)", "changed": " (command changed: starting over)"}.get(status, "")
        progress.start(stage.description + note, stage.directory / STAGE_LOG)
        started = time.perf_counter()
        if status == "todo":  # leftovers of a stage that failed before any result: only the files it wrote
            ownership.remove(_stage_entries(stage))
        stage.directory.mkdir(parents=True, exist_ok=True)
        artifacts.write_json_atomic(stage.directory / STAGE_CONFIG, stage.record)
        shown = stage.display + command[len(stage.command) :]  # plus --resume_from_checkpoint / --overwrite
        try:
            run_logged(command, stage.directory / STAGE_LOG, shown, echo=self.config.stream, on_status=progress.update)
            self._check_outputs(stage)
        except StageFailed as failure:
            if failure.code != EXIT_DIVERGED or stage.kind != "train":
                progress.fail()
                raise
            progress.line_end("diverged (left out of the best-run pick)")
            return
        except KeyboardInterrupt:
            raise  # run_logged has said what happens next
        except BaseException:
            progress.fail()
            raise
        progress.finish(time.perf_counter() - started)

    @staticmethod
    def _check_outputs(stage: Stage) -> None:
        if stage.kind == "train":
            summary = artifacts.read_run_summary(stage.directory)
            if summary is None or summary.get("interrupted"):
                raise UserError(f"{stage.description} stopped before the end; rerun the same command to resume")
        elif artifacts.read_eval_summary(stage.directory) is None:
            raise UserError(f"{stage.description} wrote no readable {EVAL_SUMMARY}; see {stage.directory / STAGE_LOG}")


def check_training_stage(stage: Stage, recipe: dict[str, Any], evaluation: dict[str, Any] | None = None) -> None:
    """Parse and validate a training stage's options as ``train_sft.py`` will, so that a bad value is refused before
    the study writes anything (not hours later, when that stage starts); with the study's ``evaluation`` settings,
    also that the stage does not train on the evaluation's data."""
    from mathsft.configs import REPLACED_FIELDS, check_not_evaluation_data, validate_args
    from mathsft.recipes import parse_training_args

    where = f"{stage.description} ({stage.directory})"
    for key in recipe:
        if key in REPLACED_FIELDS:
            raise UserError(f"{where}: '{key}' is not used by this project: {REPLACED_FIELDS[key]}")
    argv = stage.command[stage.command.index(str(REPO_ROOT / TRAIN_SCRIPT)) + 1 :]
    # Values only: the hardware (bf16 on a GPU) is the stage's own check, and a GPU study may be planned on a CPU.
    argv += ["--use_cpu", "true"]
    saved_environ, usage = dict(os.environ), io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):  # argparse prints its usage before it exits
            data_args, training_args, model_args = parse_training_args(argv)
        validate_args(data_args, training_args, model_args)
        if evaluation is not None:
            check_not_evaluation_data(data_args, evaluation)
    except SystemExit:  # argparse rejected a value (a type or a choice)
        last = (usage.getvalue().strip().splitlines() or ["invalid option"])[-1]
        raise UserError(f"{where}: {last.split('error: ', 1)[-1]}") from None
    except UserError as err:
        raise UserError(f"{where}: {err}") from err
    finally:  # a recipe's env: section is for the stage's own process
        os.environ.clear()
        os.environ.update(saved_environ)


def refuse_name_collisions(runs: list[TrainRun]) -> None:
    """Two learning rates whose run names are equal (0.001 and 0.0010000001 are both ``1e-3``) would train into one
    folder: refused before anything runs."""
    seen: dict[str, TrainRun] = {}
    for run in runs:
        other = seen.setdefault(run.name, run)
        if other is not run:
            raise UserError(
                f"learning_rates.{run.method}: {other.learning_rate!r} and {run.learning_rate!r} give one run name, "
                f"{run.name}; use rates that differ in their first 6 significant digits"
            )


def refuse_shared_folders(stages: list[Stage]) -> None:
    """Every planned stage has a folder of its own; two in one folder would mix or overwrite their results."""
    seen: dict[str, Stage] = {}
    for stage in stages:
        key = os.path.normcase(os.path.abspath(stage.directory)).lower()  # one folder on a case-insensitive disk too
        other = seen.setdefault(key, stage)
        if other is not stage:
            raise UserError(f"'{other.description}' and '{stage.description}' would share the folder {stage.directory}")


def _stage_entries(stage: Stage) -> list[Path]:
    """What the study and the stage's script wrote into the stage folder (see ``mathsft.ownership``). A folder that
    is a link, holds anything else, or holds results without a record of this study's stage is not the study's: one
    line, with or without --overwrite, and nothing in it is touched."""
    directory = stage.directory
    if directory.is_symlink():
        raise UserError(f"stage folder {directory} is a symbolic link; the study never writes or removes through a "
                        "link: use another --study_dir")  # fmt: skip
    entries = ownership.refuse_foreign(directory, (stage.kind, ownership.STAGE), "stage folder").removable()
    record = read_json(directory / STAGE_CONFIG)
    if any(not path.name.endswith(".tmp") for path in entries) and (record or {}).get("stage") != stage.kind:
        raise UserError(f"stage folder {directory} holds files but no record of this study's {stage.kind} stage "
                        f"({STAGE_CONFIG}); it is left alone: move it away or use another --study_dir")  # fmt: skip
    return entries


def _has_results(stage: Stage) -> bool:
    """Whether a stage folder holds any result (a summary, a checkpoint, generations), not just its leftovers."""
    directory = stage.directory
    if stage.kind == "train":
        return (directory / RUN_SUMMARY).is_file() or bool(artifacts.checkpoints(directory))
    return (directory / EVAL_SUMMARY).is_file() or (directory / GENERATIONS).is_file()


def describe_changes(recorded: dict[str, Any], expected: dict[str, Any]) -> str:
    """What differs between two stage records, briefly: ``--max_new_tokens 48 -> 40; recipe_sha256 changed``."""
    parts = []
    for key in sorted(set(recorded) | set(expected)):
        old, new = recorded.get(key), expected.get(key)
        if old == new:
            continue
        if key == "command" and isinstance(old, list) and isinstance(new, list):
            matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                if tag == "equal":
                    continue
                flag = old[i1 - 1] + " " if i1 > 0 and old[i1 - 1].startswith("--") and tag == "replace" else ""
                parts.append(f"{flag}{' '.join(old[i1:i2]) or '(nothing)'} -> {' '.join(new[j1:j2]) or '(nothing)'}")
        elif key.endswith("sha256"):
            parts.append(f"{key.removesuffix('_sha256')} file changed")
        else:
            parts.append(f"{key}: {old!r} -> {new!r}")
    return "; ".join(parts)


def run_study(config: StudyConfig) -> Path | None:
    """Plan and run a study; returns the path of ``report.md`` (None on a dry run)."""
    return Study(config).run()


__all__ = ["Study", "StudyConfig", "TrainRun", "describe_changes", "overrides_to_args", "parse_study_args", "run_study"]
