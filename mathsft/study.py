"""The optimizer study behind ``run_study.py``: every training run, the evaluations and the report, in one command.

Stages, each a subprocess writing into its own folder of the study dir (layout in ``docs/study.md``):

1. ``eval/base``: the base model on MATH-500 (first, so a broken eval setup fails before hours of training);
2. ``train/<method>-lr<lr>[-r<rank>]``: ``train_sft.py`` for every method x learning rate (x LoRA rank);
3. ``eval/<method>``: ``run_eval.py`` on each method's best run (lowest final validation loss);
4. the report (``mathsft.report``), rebuilt from the files every time.

Every stage folder gets ``stage_config.json`` (the exact command) and ``stage.log`` (its output). A stage whose
outputs exist and whose recorded command matches is skipped; an interrupted one resumes; one whose command changed
is refused unless ``--overwrite true``, so a config edit never silently mixes old and new results.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mathsft.data import DEFAULT_DATASET
from mathsft.errors import UserError, load_yaml_mapping, reject_unknown_keys
from mathsft.report import METHODS, final_val_loss, format_duration, format_lr, select_best, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = "train_sft.py"
EVAL_SCRIPT = "run_eval.py"
STAGE_CONFIG = "stage_config.json"
STAGE_LOG = "stage.log"
RUN_SUMMARY = "run_summary.json"
EVAL_SUMMARY = "summary.json"
STUDY_CONFIG = "study_config.json"
LAUNCHERS = ("python", "accelerate")
# Set by the study itself for every run; an override would make runs collide or lie about their grid point.
RESERVED_OVERRIDES = {"config", "output_dir", "learning_rate", "resume_from_checkpoint"}
LOG_TAIL_LINES = 15


@dataclass
class StudyConfig:
    """Arguments of ``run_study.py``: ``--config studies/<name>.yaml`` plus command-line overrides."""

    # ---- Where ----
    study_dir: str = field(default="runs/study", metadata={"help": "Output folder of the study: train/, eval/."})
    report_dir: str | None = field(default=None, metadata={"help": "Report folder (default: <study_dir>/report)."})

    # ---- Training ----
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": "Methods to run, a subset of adamw, sgd, lora."}
    )
    adamw_recipe: str | None = field(default=None, metadata={"help": "train_sft.py recipe of the AdamW runs."})
    sgd_recipe: str | None = field(default=None, metadata={"help": "train_sft.py recipe of the SGD runs."})
    lora_recipe: str | None = field(default=None, metadata={"help": "train_sft.py recipe of the LoRA runs."})
    adamw_learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Learning-rate grid for AdamW (default: the recipe's rate)."}
    )
    sgd_learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Learning-rate grid for SGD (default: the recipe's rate)."}
    )
    lora_learning_rates: list[float] | None = field(
        default=None, metadata={"help": "Learning-rate grid for LoRA (default: the recipe's rate)."}
    )
    lora_ranks: list[int] | None = field(
        default=None,
        metadata={"help": "LoRA rank grid (default: the recipe's rank); lora_alpha keeps the recipe's alpha/r."},
    )
    train_overrides: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "train_sft.py options applied to every run: a YAML mapping, or JSON on the command line."},
    )

    # ---- Launcher ----
    launcher: str = field(
        default="python",
        metadata={"help": "How to start train_sft.py: python (one process) or accelerate.", "choices": list(LAUNCHERS)},
    )
    accelerate_config: str | None = field(
        default=None, metadata={"help": "accelerate config file (launcher: accelerate)."}
    )
    num_processes: int = field(default=1, metadata={"help": "Training processes (GPUs) for accelerate launch."})

    # ---- Evaluation (run_eval.py) ----
    eval_model: str | None = field(
        default=None, metadata={"help": "Model of the base evaluation (default: the recipes' model_name_or_path)."}
    )
    eval_dataset: str = field(default=DEFAULT_DATASET, metadata={"help": "Evaluation dataset (MATH-500)."})
    eval_split: str = field(default="test", metadata={"help": "Evaluation split."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N problems."})
    eval_max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per sample."})
    eval_batch_size: int | None = field(default=None, metadata={"help": "run_eval.py --batch_size (default: its own)."})
    eval_num_samples: int = field(default=1, metadata={"help": "Samples per problem (> 1 needs eval_temperature)."})
    eval_temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy."})
    eval_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    eval_seed: int = field(default=42, metadata={"help": "Sampling seed."})
    eval_backend: str = field(
        default="auto",
        metadata={"help": "run_eval.py backend.", "choices": ["auto", "hf", "static", "paged"]},
    )

    # ---- Behaviour ----
    overwrite: bool = field(
        default=False, metadata={"help": "Redo stages whose recorded command differs (deletes their old outputs)."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Print the plan and the commands, run nothing."})
    stream: bool = field(default=False, metadata={"help": "Also echo every stage's output on the console."})
    log_scale: bool = field(default=False, metadata={"help": "Log-scale loss axes in the report's figures."})

    @property
    def report_path(self) -> Path:
        return Path(self.report_dir) if self.report_dir else Path(self.study_dir) / "report"


# ----------------------------------------------------------------------------------------------------------------
# Configuration: parsing and validation
# ----------------------------------------------------------------------------------------------------------------


def _study_keys() -> list[str]:
    return [f.name for f in fields(StudyConfig)]


def _check_yaml_keys(path: str) -> None:
    """Unknown keys in the study YAML, reported by name (TrlParser would only list leftover strings)."""
    reject_unknown_keys(load_yaml_mapping(path, "study config"), [*_study_keys(), "env"], "study", path)


def parse_study_args(argv: list[str] | None = None) -> StudyConfig:
    """``--config study.yaml`` plus CLI overrides -> a validated :class:`StudyConfig`."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise UserError("--config needs a file")
        _check_yaml_keys(argv[index + 1])
    try:
        (config,) = TrlParser((StudyConfig,), prog="run_study.py").parse_args_and_config(argv)
    except (ValueError, TypeError) as err:
        raise UserError(f"bad study config: {str(err).splitlines()[0]}") from err
    normalize_config(config)
    return config


def _numbers(values: Any, kind: type, key: str) -> list[Any] | None:
    """YAML reads ``1e-5`` (no dot) as a string; grids are coerced here, and must be positive."""
    if values is None:
        return None
    if not isinstance(values, list | tuple):
        values = [values]
    out = []
    for value in values:
        try:
            number = kind(value)
        except (TypeError, ValueError) as err:
            raise UserError(f"{key}: '{value}' is not a number") from err
        if kind is int and number != float(value):
            raise UserError(f"{key}: '{value}' is not an integer")
        if not number > 0:
            raise UserError(f"{key}: values must be > 0, got {value}")
        out.append(number)
    if not out:
        raise UserError(f"{key} is empty; leave it out to use the recipe's value")
    if len(set(out)) != len(out):
        raise UserError(f"{key} lists a value twice: {values}")
    return out


def normalize_config(config: StudyConfig) -> None:
    """Coerce YAML/CLI values to their types and check what the parser cannot; each failure is one line."""
    if isinstance(config.methods, str):
        config.methods = [config.methods]
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise UserError(f"methods must be a non-empty subset of {', '.join(METHODS)}; got {config.methods}")
    if len(set(config.methods)) != len(config.methods):
        raise UserError(f"methods lists a method twice: {config.methods}")
    # Keep the study's own order, whatever the config's: the report reads in this order too.
    config.methods = [m for m in METHODS if m in config.methods]
    for method in METHODS:
        key = f"{method}_learning_rates"
        setattr(config, key, _numbers(getattr(config, key), float, key))
    config.lora_ranks = _numbers(config.lora_ranks, int, "lora_ranks")

    overrides = config.train_overrides
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as err:
            raise UserError(f"train_overrides is not a JSON mapping: {err.msg}") from err
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise UserError("train_overrides must be a mapping of train_sft.py options to values")
    config.train_overrides = overrides
    _check_overrides(overrides, ranks=config.lora_ranks is not None)

    if config.launcher == "python" and config.num_processes != 1:
        raise UserError("num_processes > 1 needs launcher: accelerate (and an accelerate_config)")
    if config.num_processes < 1:
        raise UserError(f"num_processes must be >= 1, got {config.num_processes}")
    if config.launcher == "accelerate":
        if not config.accelerate_config:
            raise UserError("launcher: accelerate needs accelerate_config (e.g. accelerate_configs/single_gpu.yaml)")
        if not Path(config.accelerate_config).is_file():
            raise UserError(f"accelerate config not found: {config.accelerate_config}")

    from mathsft.evaluation import EvalArguments, validate_eval_args

    validate_eval_args(
        EvalArguments(
            model=config.eval_model or "-",
            output=config.study_dir,
            limit=config.eval_limit,
            max_new_tokens=config.eval_max_new_tokens,
            batch_size=config.eval_batch_size,
            num_samples=config.eval_num_samples,
            temperature=config.eval_temperature,
            top_p=config.eval_top_p,
        )
    )


def _check_overrides(overrides: dict[str, Any], ranks: bool) -> None:
    from trl import ModelConfig

    from mathsft.configs import DataArguments, MathSFTConfig

    known = {f.name for cls in (DataArguments, MathSFTConfig, ModelConfig) for f in fields(cls)}
    reserved = RESERVED_OVERRIDES | ({"lora_r", "lora_alpha"} if ranks else set())
    for key, value in overrides.items():
        if key in reserved:
            raise UserError(f"train_overrides may not set '{key}': the study sets it for every run")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"train_overrides: unknown train_sft.py option '{key}'{hint}")
        if value is None:
            raise UserError(f"train_overrides: '{key}' is null; remove it to keep the recipe's value")


# ----------------------------------------------------------------------------------------------------------------
# The plan: training runs and stage records
# ----------------------------------------------------------------------------------------------------------------


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


def load_recipe(path: str) -> dict[str, Any]:
    return load_yaml_mapping(path, "recipe")


def recipe_method(recipe: dict[str, Any]) -> str:
    """The method a recipe trains, as ``mathsft.configs.method_name`` will name it."""
    return "lora" if recipe.get("use_peft") else str(recipe.get("optimizer", "adamw"))


def _default(name: str) -> Any:
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
        name = f"{self.method}-lr{format_lr(self.learning_rate)}"
        return f"{name}-r{self.lora_r}" if self.lora_r is not None else name

    @property
    def description(self) -> str:
        text = f"train {self.method} lr={format_lr(self.learning_rate)}"
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
        self.recipes: dict[str, dict[str, Any]] = {}
        for method in config.methods:
            path = getattr(config, f"{method}_recipe")
            if not path:
                raise UserError(f"missing recipe for {method}: set {method}_recipe (or drop {method} from methods)")
            recipe = load_recipe(path) | config.train_overrides
            if recipe_method(recipe) != method:
                raise UserError(f"{method}_recipe {path} trains {recipe_method(recipe)}, not {method}")
            self.recipes[method] = recipe
        self.runs = self._plan_runs()

    # ---- planning ----

    def _plan_runs(self) -> list[TrainRun]:
        runs = []
        for method in self.config.methods:
            recipe_path = getattr(self.config, f"{method}_recipe")
            recipe = self.recipes[method]
            rates = getattr(self.config, f"{method}_learning_rates")
            if rates is None:
                rates = [float(recipe.get("learning_rate", _default("learning_rate")))]
            ranks: list[int | None] = [None]
            recipe_r = int(recipe.get("lora_r", 16))
            recipe_alpha = float(recipe.get("lora_alpha", 32))
            if method == "lora" and self.config.lora_ranks:
                ranks = list(self.config.lora_ranks)
            for rate in rates:
                for rank in ranks:
                    # alpha scales with the rank so that alpha/r (the update scale) stays the recipe's
                    # (rounded: lora_alpha is an integer option).
                    alpha = None if rank is None else max(1, round(recipe_alpha * rank / recipe_r))
                    runs.append(TrainRun(method, recipe_path, rate, rank, alpha))
        return runs

    def base_model(self) -> str:
        if self.config.eval_model:
            return self.config.eval_model
        models = {str(r.get("model_name_or_path")) for r in self.recipes.values()}
        if len(models) != 1:
            raise UserError(f"the recipes train different models ({', '.join(sorted(models))}); set eval_model")
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
        directory = self.study_dir / "train" / run.name
        args = ["--config", run.recipe, "--output_dir", str(directory), "--learning_rate", repr(run.learning_rate)]
        if run.lora_r is not None:
            args += ["--lora_r", str(run.lora_r), "--lora_alpha", str(run.lora_alpha)]
        args += overrides_to_args(self.config.train_overrides)
        prefix, shown = self._launcher()
        display = [*shown, TRAIN_SCRIPT, *args]
        record = {
            "stage": "train",
            "name": run.name,
            "method": run.method,
            "learning_rate": run.learning_rate,
            "lora_r": run.lora_r,
            "recipe": run.recipe,
            # An edited recipe is a different run, even under the same path.
            "recipe_sha256": hashlib.sha256(Path(run.recipe).read_bytes()).hexdigest(),
            "command": display,
        }
        command = [*prefix, str(REPO_ROOT / TRAIN_SCRIPT), *args]
        return Stage("train", run.name, run.description, directory, record, command, display)

    def eval_stage(self, name: str, run_dir: Path | None) -> Stage:
        """``base`` (run_dir None) or a method's best run: full models directly, LoRA as base + adapter."""
        directory = self.study_dir / "eval" / name
        record: dict[str, Any] = {"stage": "eval", "name": name, "run": None, "run_finished_at": None}
        if run_dir is None:
            model_args = ["--model", self.base_model()]
        else:
            summary = read_json(run_dir / RUN_SUMMARY) or {}
            hyper = summary.get("hyperparameters", {})
            if hyper.get("use_peft"):
                model_args = ["--model", str(hyper["model_name_or_path"]), "--adapter", str(run_dir)]
            else:
                model_args = ["--model", str(run_dir)]
            # A retrained run (same folder, new weights) must be re-evaluated.
            record |= {"run": run_dir.name, "run_finished_at": summary.get("finished_at")}
        c = self.config
        args = [
            *model_args,
            "--dataset", c.eval_dataset, "--split", c.eval_split, "--output", str(directory),
            "--max_new_tokens", str(c.eval_max_new_tokens), "--num_samples", str(c.eval_num_samples),
            "--temperature", repr(c.eval_temperature), "--top_p", repr(c.eval_top_p), "--seed", str(c.eval_seed),
            "--backend", c.eval_backend,
        ]  # fmt: skip
        if c.eval_limit is not None:
            args += ["--limit", str(c.eval_limit)]
        if c.eval_batch_size is not None:
            args += ["--batch_size", str(c.eval_batch_size)]
        if self.system_prompt():
            args += ["--system_prompt", str(self.system_prompt())]
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
        total = len(train_stages) + 1 + len(c.methods)
        progress = Progress(total, stream=c.stream)
        print(
            f"study {self.study_dir}: {_plural(len(train_stages), 'training run')} "
            f"({', '.join(r.name for r in self.runs)}), {_plural(1 + len(c.methods), 'evaluation')} "
            f"(base, {', '.join(c.methods)}); logs: <stage dir>/{STAGE_LOG}",
            flush=True,
        )
        if not c.dry_run:
            self.study_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.study_dir / STUDY_CONFIG, asdict(c) | {"runs": [r.name for r in self.runs]})

        self._run_stage(self.eval_stage("base", None), progress)
        for stage in train_stages:
            self._run_stage(stage, progress)

        if c.dry_run:
            for method in c.methods:
                progress.line(f"eval {method}", "after training: the best of its runs (lowest final val loss)")
            return None

        run_dirs = [self.study_dir / "train" / run.name for run in self.runs]
        summaries = {d.name: read_json(d / RUN_SUMMARY) for d in run_dirs}
        by_method = {m: [(d.name, summaries[d.name]) for d in run_dirs if d.name.startswith(f"{m}-")] for m in METHODS}
        for method in c.methods:
            best = select_best(by_method[method])
            if best is None:
                progress.line(f"eval {method}", "skipped: no run finished with a finite validation loss")
                continue
            loss = final_val_loss(summaries[best])
            if len(by_method[method]) > 1:
                print(f"      best {method}: {best} (final validation loss {loss:.4f})", flush=True)
            self._run_stage(self.eval_stage(method, self.study_dir / "train" / best), progress)

        report = write_report([self.study_dir], c.report_path, log_scale=c.log_scale)
        print(f"report: {report}", flush=True)
        return report

    def _status(self, stage: Stage) -> tuple[str, str | None]:
        """``done``, ``resume`` (with a checkpoint for training), ``todo`` or ``changed`` (with the differences)."""
        directory = stage.directory
        if not directory.is_dir() or not any(directory.iterdir()):
            return "todo", None
        recorded = read_json(directory / STAGE_CONFIG)
        if recorded is None:
            return "changed", f"{directory} exists but has no {STAGE_CONFIG}"
        expected = json.loads(json.dumps(stage.record))
        if recorded != expected:
            return "changed", describe_changes(recorded, expected)
        if stage.kind == "train":
            summary = read_json(directory / RUN_SUMMARY)
            if summary is not None and not summary.get("interrupted"):
                return "done", None
            checkpoint = last_checkpoint(directory)
            return ("resume", str(checkpoint)) if checkpoint else ("todo", None)
        if (directory / EVAL_SUMMARY).is_file():
            return "done", None
        return ("resume", None) if (directory / "generations.jsonl").is_file() else ("todo", None)

    def _run_stage(self, stage: Stage, progress: Progress) -> None:
        status, detail = self._status(stage)
        command = list(stage.command)
        if status == "done":
            progress.line(stage.description, "skipped (done)")
            return
        if status == "changed":
            if not self.config.overwrite:
                raise UserError(
                    f"{stage.directory} was run with other settings ({detail}); "
                    "pass --overwrite true to redo that stage, or use another --study_dir"
                )
            if stage.kind == "train":
                shutil.rmtree(stage.directory)  # stale checkpoints must not be resumed into the new run
            else:
                command += ["--overwrite", "true"]  # run_eval.py starts over
        if status == "resume" and stage.kind == "train":
            command += ["--resume_from_checkpoint", str(detail)]
        if self.config.dry_run:
            what = {"todo": "to run", "resume": "to resume", "changed": "to redo (--overwrite)"}[status]
            progress.line(stage.description, f"{what}: {' '.join(stage.display)}")
            return
        note = {"resume": " (resuming)", "changed": " (command changed: starting over)"}.get(status, "")
        progress.start(stage.description + note, stage.directory / STAGE_LOG)
        started = time.perf_counter()
        stage.directory.mkdir(parents=True, exist_ok=True)
        write_json(stage.directory / STAGE_CONFIG, stage.record)
        shown = stage.display + command[len(stage.command) :]  # plus --resume_from_checkpoint / --overwrite
        try:
            run_logged(command, stage.directory / STAGE_LOG, shown, echo=self.config.stream)
            if stage.kind == "train":
                summary = read_json(stage.directory / RUN_SUMMARY)
                if summary is None or summary.get("interrupted"):
                    raise UserError(f"{stage.description} stopped before the end; rerun the same command to resume")
            elif not (stage.directory / EVAL_SUMMARY).is_file():
                raise UserError(f"{stage.description} wrote no {EVAL_SUMMARY}; see {stage.directory / STAGE_LOG}")
        except KeyboardInterrupt:
            raise  # run_logged has said what happens next
        except BaseException:
            progress.fail()
            raise
        progress.finish(time.perf_counter() - started)


class Progress:
    """Console lines: ``[3/8] train lora lr=2e-4 ... done in 41 s``."""

    def __init__(self, total: int, stream: bool = False) -> None:
        self.total = total
        self.index = 0
        self.stream = stream

    def _prefix(self) -> str:
        self.index += 1
        return f"[{self.index}/{self.total}]"

    def line(self, description: str, status: str) -> None:
        print(f"{self._prefix()} {description} ... {status}", flush=True)

    def start(self, description: str, log: Path) -> None:
        # With streaming, the stage's own output follows, so the start gets a line of its own.
        end = "\n" if self.stream else ""
        print(f"{self._prefix()} {description} (log: {log}) ...", end=end, flush=True)

    def fail(self) -> None:
        print(" failed" if not self.stream else f"[{self.index}/{self.total}] ... failed", flush=True)

    def finish(self, seconds: float) -> None:
        prefix = f"[{self.index}/{self.total}] ..." if self.stream else ""
        print(f"{prefix} done in {format_duration(seconds)}", flush=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


# ----------------------------------------------------------------------------------------------------------------
# Files and subprocesses
# ----------------------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when the file is missing or unreadable (a crash mid-write)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


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


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` (the trainer writes trainer_state.json last)."""
    found = []
    for path in directory.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if path.is_dir() and suffix.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-20000:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Progress bars rewrite one line with \r: keep the last state of each.
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(line for line in kept[-lines:])


def run_logged(command: list[str], log_path: Path, display: list[str], echo: bool = False) -> None:
    """Run ``command``, appending its stdout and stderr to ``log_path`` (and the console with ``echo``).

    On Ctrl-C the child gets the same SIGINT (same process group): training saves a checkpoint, evaluation keeps
    its finished batches; we wait for it to stop, then re-raise. A SIGTERM to the study (a scheduler preempting the
    job) is passed on to the child as SIGINT, for the same clean stop. A failure prints the log's tail and raises.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    terminated = False
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(display)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None

        def pump() -> None:
            for chunk in iter(lambda: process.stdout.read1(65536), b""):
                log.write(chunk)
                log.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()

        def on_sigterm(signum: int, frame: Any) -> None:
            nonlocal terminated
            terminated = True
            process.send_signal(signal.SIGINT)

        try:
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread
            previous = None
        try:
            pump()
            code = process.wait()
        except KeyboardInterrupt:
            print("\ninterrupted: letting the stage stop cleanly (Ctrl-C again to kill it)", file=sys.stderr)
            try:
                pump()
                process.wait()
            except KeyboardInterrupt:
                process.kill()
            print("rerun the same command to resume the study", file=sys.stderr)
            raise
        finally:
            if process.poll() is None:  # an unexpected error here: never leave the child running
                process.kill()
                process.wait()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if terminated:
        print("terminated: rerun the same command to resume the study", file=sys.stderr)
        raise KeyboardInterrupt
    if code != 0:
        tail = _tail(log_path)
        if tail:
            print(f"\n----- last lines of {log_path} -----\n{tail}\n-----", file=sys.stderr)
        raise UserError(f"'{' '.join(display[:3])} ...' failed with exit code {code}; full log: {log_path}")


def run_study(config: StudyConfig) -> Path | None:
    """Plan and run a study; returns the path of ``report.md`` (None on a dry run)."""
    return Study(config).run()


__all__ = [
    "StudyConfig",
    "Study",
    "TrainRun",
    "format_lr",
    "last_checkpoint",
    "overrides_to_args",
    "parse_study_args",
    "run_study",
]
