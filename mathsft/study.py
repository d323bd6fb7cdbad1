"""The optimizer study behind ``run_study.py``: every training run, the evaluations and the report, in one command.

Stages, each a subprocess writing into its own folder of the study dir (layout in ``docs/study.md``):

1. ``eval/base``: the base model on MATH-500 (first, so a broken eval setup fails before hours of training);
2. ``train/<method>-lr<lr>[-r<rank>]``: ``train_sft.py`` for every method x learning rate (x LoRA rank);
3. ``eval/<method>``: ``run_eval.py`` on each method's best run (``mathsft.artifacts.select_best``);
4. the report (``mathsft.report``), rebuilt from the files every time.

Every stage folder gets ``stage_config.json`` (the exact command) and ``stage.log`` (its output). A stage whose
outputs exist and whose recorded command matches is skipped; an interrupted one resumes; one whose command changed
is refused unless ``--overwrite true``, so a config edit never silently mixes old and new results.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mathsft import artifacts
from mathsft.artifacts import EVAL_SUMMARY, GENERATIONS, RUN_SUMMARY, STAGE_CONFIG, STAGE_LOG, STUDY_CONFIG, read_json
from mathsft.errors import EXIT_DIVERGED, UserError
from mathsft.identity import exclusive_output
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

    @property
    def name(self) -> str:
        return artifacts.run_name(self.method, self.learning_rate, self.lora_r)

    @property
    def description(self) -> str:
        text = f"train {self.method} lr={artifacts.format_lr(self.learning_rate)}"
        return f"{text} r={self.lora_r}" if self.lora_r is not None else text


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
                    runs.append(TrainRun(method, self.config.recipe_paths[method], rate, rank, alpha))
        return runs

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
        args += overrides_to_args(self.config.overrides)
        prefix, shown = self._launcher()
        display = [*shown, TRAIN_SCRIPT, *args]
        record = {
            "stage": "train", "name": run.name, "method": run.method, "learning_rate": run.learning_rate,
            "lora_r": run.lora_r, "recipe": run.recipe,
            # An edited recipe is a different run, even under the same path.
            "recipe_sha256": hashlib.sha256(Path(run.recipe).read_bytes()).hexdigest(),
            "command": display,
        }  # fmt: skip
        command = [*prefix, str(REPO_ROOT / TRAIN_SCRIPT), *args]
        return Stage("train", run.name, run.description, directory, record, command, display)

    def eval_stage(self, name: str, run_dir: Path | None) -> Stage:
        """``base`` (run_dir None) or a method's best run: full models directly, LoRA as base + adapter."""
        directory = self.study_dir / artifacts.STUDY_EVAL_DIR / name
        record: dict[str, Any] = {"stage": "eval", "name": name, "run": None, "run_finished_at": None}
        if run_dir is None:
            model_args = ["--model", self.base_model()]
        else:
            summary = artifacts.read_run_summary(run_dir)
            hyper = summary["hyperparameters"] if summary else {}
            if hyper.get("use_peft"):
                model_args = ["--model", str(hyper["model_name_or_path"]), "--adapter", str(run_dir)]
            else:
                model_args = ["--model", str(run_dir)]
            # A retrained run (same folder, new weights) must be re-evaluated.
            record |= {"run": run_dir.name, "run_finished_at": summary.get("finished_at") if summary else None}
        settings = {k: v for k, v in self.config.eval_settings.items() if k != "model"}
        if self.system_prompt():
            settings["system_prompt"] = self.system_prompt()
        args = [*model_args, "--output", str(directory), *overrides_to_args(settings)]
        display = ["python", EVAL_SCRIPT, *args]
        record["command"] = display
        description = "eval base" if run_dir is None else f"eval {name} ({run_dir.name})"
        command = [sys.executable, str(REPO_ROOT / EVAL_SCRIPT), *args]
        return Stage("eval", name, description, directory, record, command, display)

    # ---- running ----

    def run(self) -> Path | None:
        """Run (or skip) every stage and write the report; returns the report path (None on a dry run)."""
        c = self.config
        train_stages = [self.train_stage(run) for run in self.runs]
        progress = Progress(len(train_stages) + 1 + len(c.methods), stream=c.stream)
        print(
            f"study {self.study_dir}: {plural(len(train_stages), 'training run')} "
            f"({', '.join(r.name for r in self.runs)}), {plural(1 + len(c.methods), 'evaluation')} "
            f"(base, {', '.join(c.methods)}); logs: <stage dir>/{STAGE_LOG}",
            flush=True,
        )
        base_stage = self.eval_stage(artifacts.BASE_EVAL, None)
        for run, stage in zip(self.runs, train_stages, strict=True):  # before anything is written
            check_training_stage(stage, self.recipes[run.method])
        self._refuse_changed([base_stage, *train_stages])
        if c.dry_run:
            for stage in [base_stage, *train_stages]:
                self._run_stage(stage, progress)
            for method in c.methods:
                progress.line(f"eval {method}", "after training: the best of its runs (lowest final val loss)")
            return None
        artifacts.check_writable_dir(self.study_dir, "study_dir")
        with exclusive_output(self.study_dir, "study"):
            plan = asdict(c) | {"runs": [r.name for r in self.runs]}
            artifacts.write_json_atomic(self.study_dir / STUDY_CONFIG, plan)
            for stage in [base_stage, *train_stages]:
                self._run_stage(stage, progress)
            self._evaluate_best_runs(progress)

            from mathsft.report import write_report

            report = write_report([self.study_dir], c.report_path, log_scale=c.log_scale)
        print(f"report: {report}", flush=True)
        return report

    def _refuse_changed(self, stages: list[Stage]) -> None:
        """A stage with results from other settings is refused (one line) unless --overwrite, before any write."""
        if self.config.overwrite:
            return
        for stage in stages:
            status, detail = self._status(stage)
            if status == "changed":
                raise UserError(
                    f"{stage.directory} was run with other settings ({detail}); "
                    "pass --overwrite true to redo that stage, or use another --study_dir"
                )

    def _evaluate_best_runs(self, progress: Progress) -> None:
        train_dir = self.study_dir / artifacts.STUDY_TRAIN_DIR
        summaries = {run.name: artifacts.read_run_summary(train_dir / run.name) for run in self.runs}
        for method in self.config.methods:
            candidates = [(run.name, summaries[run.name]) for run in self.runs if run.method == method]
            diverged = [name for name, summary in candidates if summary and summary.get("diverged")]
            if diverged:
                print(f"      {method}: {', '.join(diverged)} diverged; left out of the best-run pick", flush=True)
            best = artifacts.select_best(candidates)
            if best is None:
                progress.line(f"eval {method}", "skipped: no run finished with a finite validation loss")
                continue
            if len(candidates) > 1:
                loss = artifacts.final_val_loss(summaries[best])
                print(f"      best {method}: {best} (final validation loss {loss:.4f})", flush=True)
            self._run_stage(self.eval_stage(method, train_dir / best), progress)

    def _status(self, stage: Stage) -> tuple[str, str | None]:
        """``done``, ``resume`` (with a checkpoint for training), ``todo`` or ``changed`` (with the differences)."""
        directory = stage.directory
        if not directory.is_dir() or not any(directory.iterdir()):
            return "todo", None
        if not _has_results(stage):
            return "todo", None  # a stage that failed before writing any result simply runs again
        recorded = read_json(directory / STAGE_CONFIG)
        if recorded is None:
            return "changed", f"{directory} exists but has no {STAGE_CONFIG}"
        expected = json.loads(json.dumps(stage.record))
        if recorded != expected:
            return "changed", describe_changes(recorded, expected)
        if stage.kind == "train":
            summary = artifacts.read_run_summary(directory)  # wrong types: a "corrupt:" error, not a crash
            if summary is not None and summary.get("diverged"):
                return "diverged", None
            if summary is not None and not summary.get("interrupted"):
                return "done", None
            return "resume", None
        return ("done", None) if (directory / EVAL_SUMMARY).is_file() else ("resume", None)

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
        if status == "todo" and stage.directory.is_dir():
            shutil.rmtree(stage.directory)  # leftovers of a stage that failed before any result
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
        elif not (stage.directory / EVAL_SUMMARY).is_file():
            raise UserError(f"{stage.description} wrote no {EVAL_SUMMARY}; see {stage.directory / STAGE_LOG}")


def check_training_stage(stage: Stage, recipe: dict[str, Any]) -> None:
    """Parse and validate a training stage's options as ``train_sft.py`` will, so that a bad value is refused before
    the study writes anything (not hours later, when that stage starts)."""
    from mathsft.configs import REPLACED_FIELDS, validate_args
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
    except SystemExit:  # argparse rejected a value (a type or a choice)
        last = (usage.getvalue().strip().splitlines() or ["invalid option"])[-1]
        raise UserError(f"{where}: {last.split('error: ', 1)[-1]}") from None
    except UserError as err:
        raise UserError(f"{where}: {err}") from err
    finally:  # a recipe's env: section is for the stage's own process
        os.environ.clear()
        os.environ.update(saved_environ)


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
