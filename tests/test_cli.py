"""The command-line front end of the entry scripts: short --help pages, --help_all, one-line errors with a "did you
mean", the transformers/TRL fields the project replaces, and a GPU-less machine told what to run instead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from trl import ModelConfig

import run_eval
import run_study
import train_sft
from mathsft import help_pages
from mathsft.cli import MAX_SHORT_HELP_LINES, CommandHelp
from mathsft.configs import REPLACED_FIELDS, DataArguments, MathSFTConfig
from mathsft.evaluation import EvalArguments, GradeArguments
from mathsft.recipes import parse_training_args
from mathsft.study_config import StudyConfig

SMOKE = ["--config", "recipes/smoke/adamw.yaml"]
PAGES = [
    (train_sft.main, [], help_pages.TRAIN_HELP, (DataArguments, MathSFTConfig, ModelConfig)),
    (run_eval.main, [], help_pages.EVAL_HELP, (EvalArguments,)),
    (run_eval.main, ["grade"], help_pages.GRADE_HELP, (GradeArguments,)),
    (run_study.main, [], help_pages.STUDY_HELP, (StudyConfig,)),
]
IDS = ["train_sft", "run_eval", "run_eval grade", "run_study"]


def _exit(capsys: pytest.CaptureFixture[str], main, argv: list[str]) -> tuple[int, str, list[str]]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err.strip().splitlines()


def _fails_with(capsys: pytest.CaptureFixture[str], main, argv: list[str], *parts: str) -> str:
    code, _, err = _exit(capsys, main, argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for part in parts:
        assert part in err[0], (part, err[0])
    return err[0]


@pytest.mark.parametrize(("main", "prefix", "page", "classes"), PAGES, ids=IDS)
def test_short_help(capsys, main, prefix: list[str], page: CommandHelp, classes: tuple[type, ...]) -> None:
    code, out, _ = _exit(capsys, main, [*prefix, "--help"])
    assert code == 0 and 10 < len(out.splitlines()) <= MAX_SHORT_HELP_LINES
    assert "--help_all" in out
    # Every option the page shows is one the script takes: a field, or the --no_<field> of a bool field.
    fields = {f.name: f for cls in classes for f in dataclasses.fields(cls)}
    for name in page.option_names():
        field = fields.get(name) or fields.get(name.removeprefix("no_"))
        assert field is not None and (field.name == name or field.default is True), name
        assert f"  --{name}" in out


def test_train_help_shows_the_main_options(capsys) -> None:
    _, out, _ = _exit(capsys, train_sft.main, ["-h"])
    for option in ("config", "model_name_or_path", "dataset_name", "optimizer", "use_peft", "learning_rate",
                   "num_train_epochs", "output_dir", "resume_from_checkpoint", "overwrite", "use_cpu"):  # fmt: skip
        assert f"\n  --{option} " in out, option
    _, out, _ = _exit(capsys, run_eval.main, ["--help"])
    assert "run_eval.py grade" in out and "grade --help" in out
    assert "HF_HUB_OFFLINE" in out


def test_help_all_lists_everything(capsys) -> None:
    code, out, _ = _exit(capsys, train_sft.main, ["--help_all"])
    assert code == 0 and len(out.splitlines()) > 300
    assert "--config FILE.yaml" in out and "--optimizer OPTIMIZER" in out and "--lr_scheduler_type" in out
    _, out, _ = _exit(capsys, run_eval.main, ["--help_all"])
    no_progress = out[out.index("  --no_progress") :].splitlines()
    assert no_progress[1].strip() == "Same as --progress false."  # not the copied "Show a progress bar."


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (train_sft.main, [*SMOKE, "--learning_rte", "1"], "option --learning_rte (did you mean 'learning_rate'?)"),
        (train_sft.main, [*SMOKE, "--learning_r", "1e-4"], "unknown option --learning_r"),  # never abbreviated
        (run_eval.main, ["--model", "m", "--output", "o", "--max_new_token", "4"], "(did you mean 'max_new_tokens'?)"),
        (run_eval.main, ["grade", "--inptu", "x.jsonl"], "unknown option --inptu (did you mean 'input'?)"),
        (run_study.main, ["--config", "studies/smoke.yaml", "--dry_runn", "true"], "(did you mean 'dry_run'?)"),
        (train_sft.main, [*SMOKE, "--learning_rate", "fast"], "argument --learning_rate"),
        (train_sft.main, [*SMOKE, "extra"], "unexpected argument 'extra'"),
        (run_eval.main, ["--model", "m"], "the following arguments are required: --output"),
    ],
)  # fmt: skip
def test_command_line_errors_are_one_line(capsys, main, argv: list[str], message: str) -> None:
    _fails_with(capsys, main, argv, message)


@pytest.mark.parametrize("key", sorted(REPLACED_FIELDS))
def test_replaced_fields_point_to_ours(capsys, key: str) -> None:
    value = "true" if key in {"trust_remote_code", "load_in_8bit", "load_in_4bit", "use_bnb_nested_quant"} else "x"
    line = _fails_with(capsys, train_sft.main, [*SMOKE, f"--{key}", value], key, REPLACED_FIELDS[key])
    assert "Traceback" not in line


def test_replaced_field_in_a_recipe(capsys, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path("recipes/smoke/sgd.yaml").read_text() + "optim: sgd\n")
    _fails_with(capsys, train_sft.main, ["--config", str(recipe)], "'optim' (set in the recipe)", "set `optimizer`")
    recipe.write_text(Path("recipes/smoke/sgd.yaml").read_text() + "trust_remote_code: false\n")
    data_args, training_args, _ = parse_training_args(["--config", str(recipe)])  # false: what the project does
    assert training_args.optimizer == "sgd" and data_args.dataset_name == "assets/smoke-task/data"


def test_config_equals_form_and_overrides() -> None:
    _, training_args, model_args = parse_training_args(["--config=recipes/smoke/lora.yaml", "--learning_rate", "0.5"])
    assert training_args.learning_rate == 0.5 and model_args.use_peft


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_recipe_on_a_machine_without_gpu(capsys) -> None:
    smoke_and_cpu = ("python train_sft.py --config recipes/smoke/adamw.yaml", "--use_cpu true --bf16 false")
    line = _fails_with(capsys, train_sft.main, ["--config", "recipes/qwen3-0.6b-base/adamw.yaml"], *smoke_and_cpu)
    assert line.startswith("error: no GPU found") and "Your setup" not in line
    line = _fails_with(capsys, train_sft.main, [], *smoke_and_cpu)
    assert line.startswith("error: no recipe given, and no GPU found")
    # The advice works: the GPU recipe with those two overrides parses on this machine.
    _, training_args, _ = parse_training_args(
        ["--config", "recipes/qwen3-0.6b-base/adamw.yaml", "--use_cpu", "true", "--bf16", "false"]
    )
    assert training_args.use_cpu and not training_args.bf16


@pytest.mark.parametrize("classes", [classes for *_, classes in PAGES], ids=IDS)
def test_every_option_argparse_takes_is_known_to_the_precheck(classes: tuple[type, ...]) -> None:
    """The unknown-option check reads the command line before argparse; it must accept every spelling argparse
    accepts (--key, --key-with-dashes, --no_key), or a valid option would be refused."""
    from mathsft.cli import _make_parser, option_name

    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    for action in _make_parser(classes, "x")._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert option_name(option, known) == action.dest, option
