"""The report from run and evaluation files built by the schema factory: exact tables, intervals and paired
comparisons, what the evaluation data is, missing pieces shown as missing, one report per study."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

import make_report
from mathsft.artifacts import EvalSummary, RunSummary, format_lr, schema_problems, select_best
from mathsft.report import missing_cells, table_rows, write_report
from mathsft.results import collect
from mathsft.stats import paired_comparison
from summary_factory import eval_summary, graded_rows, hyperparameters, run_summary, write_eval, write_json

# 20 problems: base solves 0-4; adamw solves 0-3 and 5-14. By hand: adamw alone 10 (5-14), base alone 1 (4);
# difference (14 - 5) / 20 = +45 points; exact McNemar p = 2 * (C(11,0) + C(11,1)) / 2^11 = 24 / 2048 = 0.0117.
BASE_CORRECT = [i < 5 for i in range(20)]
ADAMW_CORRECT = [i < 4 or 5 <= i < 15 for i in range(20)]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """adamw (GPU), two sgd runs (one never finished), lora (CPU, sampled eval, interval in its summary, no
    generations); the sgd evaluation is missing."""
    root = tmp_path / "study"
    write_json(root / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw", lr=1e-5, val=(1.0, 0.8)))
    write_json(root / "train/sgd-lr0.01/run_summary.json", run_summary("sgd", lr=0.01, val=(1.1, 0.95)))
    write_json(root / "train/sgd-lr0.02/stage_config.json", {"stage": "train", "method": "sgd", "learning_rate": 0.02})
    write_json(root / "train/lora-lr2e-4/run_summary.json", run_summary("lora", lr=2e-4, val=(1.05, 0.9), cuda=False))
    write_eval(root / "eval/base", eval_summary(0.25, 20, no_box=5), graded_rows(BASE_CORRECT))
    write_eval(root / "eval/adamw", eval_summary(0.7, 20, truncated=1, no_box=0), graded_rows(ADAMW_CORRECT),
               run="adamw-lr1e-5")  # fmt: skip
    lora = eval_summary(0.1875, 20, samples=4, no_box=2, adapter="x/lora-lr2e-4", accuracy_ci95=[0.1, 0.3])
    lora |= {"pass@1": 0.1875, "pass@2": 0.3125, "pass@4": 0.5, "maj@4": 0.25}  # type: ignore[typeddict-unknown-key]
    write_eval(root / "eval/lora", lora, run="lora-lr2e-4")
    return root


def rows_of(markdown: str, header_start: str) -> list[str]:
    """The data rows of the first table whose header starts with ``header_start``, as text."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


# ---- the schema factory --------------------------------------------------------------------------------------------


def test_fixtures_come_from_the_schemas() -> None:
    assert schema_problems(run_summary("lora"), RunSummary) == []
    assert schema_problems(eval_summary(), EvalSummary) == []
    with pytest.raises(KeyError, match="eval_losses"):
        run_summary(eval_losses=[])  # a misspelt (or renamed) key is refused, not silently added
    with pytest.raises(KeyError, match="accuracy_ci"):
        eval_summary(accuracy_ci=[0.1, 0.2])
    with pytest.raises(AssertionError, match="global_step"):
        run_summary(global_step="20")  # a wrong type fails the schema check
    assert eval_summary(accuracy_ci95=[0.1, 0.3])["accuracy_ci95"] == [0.1, 0.3]  # type: ignore[typeddict-item]
    assert set(hyperparameters("sgd")) >= {"sgd_momentum", "sgd_nesterov", "sgd_dampening", "learning_rate"}


# ---- resources -------------------------------------------------------------------------------------------------------


def test_resources_table_exact(study: Path, tmp_path: Path) -> None:
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "resources.md").read_text()
    assert rows_of(text, "| run | method | device |") == [
        "| adamw-lr1e-5 | adamw | NVIDIA H100 80GB HBM3 | bf16 / float32 weights | 8 × 2 × 1 = 16 "
        "| 596,049,920 (100.00%) | 596,049,920 | 11.00 | 12.25 | n/a (GPU run) | 10 min 00 s, 1 h 01 min | 1 h 11 min "
        "| 1 h 15 min | 558 |",
        "| sgd-lr0.01 | sgd | NVIDIA H100 80GB HBM3 | bf16 / float32 weights | 8 × 2 × 1 = 16 "
        "| 596,049,920 (100.00%) | 596,049,920 | 11.00 | 12.25 | n/a (GPU run) | 10 min 00 s, 1 h 01 min | 1 h 11 min "
        "| 1 h 15 min | 558 |",
        "| sgd-lr0.02 | sgd" + " | missing" * 12 + " |",
        # CPU: RSS in its own column, never under GPU memory; times marked CPU; 30 s of training is indicative.
        "| lora-lr2e-4 | lora | cpu (x86_64, 2 cores) | fp32 / float32 weights | 8 × 2 × 1 = 16 "
        "| 10,092,544 (1.67%) | 606,142,464 | n/a (CPU run) | n/a (CPU run) | 0.60 | 20.0 s, 10.0 s (CPU) "
        "| 30.0 s (CPU) | 35.0 s (CPU) | 2,000 (CPU; indicative: under 1 min) |",
    ]
    assert "| lora-lr2e-4 | 2 | 20 | 10.0 s (CPU) | 30,000 | 3,000 (CPU; indicative: under 1 min) | n/a (CPU run) " \
           "| 0.50 |" in text  # fmt: skip
    assert "| adamw-lr1e-5 | 1 | 10 | 10 min 00 s | 1,200,000 | 2,000 | 10.50 / 12.25 | n/a (GPU run) |" in text


def test_memory_breakdown_beside_the_measured_peak(study: Path, tmp_path: Path) -> None:
    """Static memory by hand: Qwen3-0.6B has 596,049,920 parameters, 4 bytes each in float32 = 2.22 GiB of weights,
    as much of gradients, AdamW 2 moments = 4.44 GiB, SGD 1 momentum buffer; total AdamW 9,536,798,720 B = 8.88 GiB,
    so 11.00 GiB measured leaves 2.12 GiB. LoRA r16: 10,092,544 adapters x 4 B = 38.50 MiB of gradients, 77.00 MiB
    of AdamW state; weights (596,049,920 + 10,092,544) x 4 B = 2.26 GiB."""
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "resources.md").read_text()
    assert rows_of(text, "| method | run | weights dtype |") == [
        "| adamw | adamw-lr1e-5 | float32 | 596,049,920 | 2.22 GiB | 2.22 GiB | 4.44 GiB (2 per trainable parameter) "
        "| 8.88 GiB | 11.00 GiB (GPU, allocated) | 2.12 GiB |",
        "| sgd | sgd-lr0.01 | float32 | 596,049,920 | 2.22 GiB | 2.22 GiB | 2.22 GiB (1 per trainable parameter) "
        "| 6.66 GiB | 11.00 GiB (GPU, allocated) | 4.34 GiB |",
        "| lora | lora-lr2e-4 | float32 | 10,092,544 | 2.26 GiB | 38.50 MiB | 77.00 MiB (2 per trainable parameter) "
        "| 2.37 GiB | 0.60 GiB (process RSS, CPU) | n/a (RSS is the whole process) |",
    ]


# ---- accuracy ----------------------------------------------------------------------------------------------------


def test_accuracy_table_with_intervals(study: Path, tmp_path: Path) -> None:
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "accuracy.md").read_text()
    assert rows_of(text, "| model | evaluated |") == [
        # Wilson 5/20 by hand: centre (0.25 + 1.9208/20) / 1.19207 = 0.29028, half 0.17842 -> 11.2-46.9%
        "| base | Qwen/Qwen3-0.6B-Base | 25.00% | 11.2–46.9% | (base) | 5 / 20 | 5 (25.0%) | 0 (0.0%) | 0 (0.0%) |",
        # Wilson 14/20: centre 0.66778, half 0.18675 -> 48.1-85.5% (computed from generations.jsonl)
        "| adamw | adamw-lr1e-5 | 70.00% | 48.1–85.5% | +45.00 | 14 / 20 | 0 (0.0%) | 1 (5.0%) | 0 (0.0%) |",
        # sgd-lr0.01 is the best (only finished) sgd run, but it was never evaluated.
        "| sgd | sgd-lr0.01" + " | missing" * 7 + " |",
        # lora: the interval its summary.json holds
        "| lora | lora-lr2e-4 | 18.75% | 10.0–30.0% | -6.25 | 15 / 80 | 2 (2.5%) | 0 (0.0%) | 0 (0.0%) |",
    ]
    assert rows_of(text, "| subject |") == [
        "| Algebra | 2 | 50.00% | 50.00% | missing | 50.00% |",
        "| Geometry | 2 | 25.00% | 70.00% | missing | 18.75% |",
    ]
    assert rows_of(text, "| level |") == [
        "| Level 1 | 1 | 100.00% | 100.00% | missing | 100.00% |",
        "| Level 5 | 3 | 0.00% | 0.00% | missing | 0.00% |",
    ]
    assert rows_of(text, "| model | pass@1 |") == ["| lora | 18.75% | 31.25% | 50.00% | 25.00% |"]


def test_paired_comparisons_from_generations(study: Path, tmp_path: Path) -> None:
    report = write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "accuracy.md").read_text()
    expected = paired_comparison(ADAMW_CORRECT, BASE_CORRECT)  # the bootstrap interval, seed 0, 10,000 resamples
    low, high = expected.ci95_points
    assert 15 < low < 45 < high <= 75
    assert rows_of(text, "| comparison (a vs b) |") == [
        f"| adamw vs base | +45.00 | {low:+.2f} to {high:+.2f} | 10 | 1 | 0.012 | yes |",
        "| lora vs base | not compared: lora: no generations.jsonl" + " | —" * 5 + " |",
        "| adamw vs lora | not compared: lora: no generations.jsonl" + " | —" * 5 + " |",
    ]
    assert "[problem_diff.jsonl](problem_diff.jsonl)" in text and "(11 records)" in text
    assert "[problem_diff.jsonl](problem_diff.jsonl)" in report.read_text()
    records = [json.loads(line) for line in (tmp_path / "report" / "problem_diff.jsonl").read_text().splitlines()]
    assert records[0] == {"model": "adamw", "change": "newly_failed", "id": 4, "unique_id": "test/p4.json",
                          "subject": "Algebra", "level": 5, "base_score": 1.0, "score": 0.0}  # fmt: skip
    assert [(r["id"], r["change"]) for r in records[1:]] == [(i, "newly_solved") for i in range(5, 15)]


def test_interval_and_pairing_need_the_scored_rows(study: Path, tmp_path: Path) -> None:
    """generations.jsonl that does not hold what summary.json scored is not used: no interval from other answers."""
    (study / "eval/adamw/generations.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in graded_rows(ADAMW_CORRECT[:10]))
    )
    write_report([study], tmp_path / "report")
    text = (tmp_path / "report" / "accuracy.md").read_text()
    # The interval recorded in summary.json still stands; the pairing needs the rows it scored.
    assert re.search(r"\| adamw \| adamw-lr1e-5 \| 70\.00% \| \d+\.\d–\d+\.\d% \| \+45\.00 \|", text)
    assert "| adamw vs base | not compared: adamw: generations.jsonl holds 10 graded rows, summary.json scored " \
           "20 × 1 |" in text  # fmt: skip


# ---- report.md -----------------------------------------------------------------------------------------------------


def test_report_header_findings_links_and_missing(study: Path, tmp_path: Path) -> None:
    report = write_report([study], tmp_path / "report")
    text = report.read_text()
    assert text.startswith("# Fine-tuning `Qwen/Qwen3-0.6B-Base` with adamw, sgd, lora\n")
    assert "- **Training data:** `ricdomolm/MATH-500` split `train` (10800 train examples)" in text
    assert "- **Evaluation data:** `ricdomolm/MATH-500` (test split, 20 problems; smoke: not MATH-500)" in text
    assert "**Smoke study, not MATH-500.**" in text and "±20 points" in text  # Wilson 10/20: 29.9-70.1%
    assert "Times and memory were measured on a CPU" in text  # the lora run
    assert "[resources.md](resources.md)" in text and "[accuracy.md](accuracy.md)" in text
    assert "![Training loss](loss_train.png)" in text and "![Validation loss](loss_val.png)" in text
    assert "lowest *final* validation loss" in text
    order = ["## Findings", "## Setup", "## 1. Convergence", "## 2. Resources", "## 3. Accuracy"]
    assert [text.index(heading) for heading in order] == sorted(text.index(heading) for heading in order)
    assert "Please reason step by step, and put your final answer within \\boxed{}." in text
    assert "- sgd-lr0.02: missing" in text and "- sgd: missing" in text
    assert "| sgd-lr0.01 | sgd | 0.01 | n/a | 20 | 0.7000 | 0.9500 | 0.9500 (step 20) | ✓ best |" in text
    assert "| lora-lr2e-4 | lora | 2e-4 | 16 | 20 | 0.7000 | 0.9000 | 0.9000 (step 20) | ✓ best |" in text
    assert "- adamw reached the lowest validation loss, 0.800 at step 20 (then lora 0.900 at step 20; sgd 0.950 " \
           "at step 20)." in text  # fmt: skip
    assert "- Peak GPU memory: adamw 11.00 GiB (the most), sgd 11.00 GiB (100% of adamw)." in text
    low, high = paired_comparison(ADAMW_CORRECT, BASE_CORRECT).ci95_points
    assert (f"- adamw vs base: +45.0 points (95% CI {low:+.1f} to {high:+.1f}; McNemar p = 0.012; 10 problems solved "
            "only by adamw, 1 only by base): significant at the 5% level.") in text
    # A study without seed, step or precision records (before issue 17): no new section, no new figure.
    assert "Tuning budget" not in text and "evaluation precision" not in text and "Accuracy over training" not in text
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["loss_train.png", "loss_val.png"]
    figures = json.loads((tmp_path / "report" / "figures.json").read_text())
    assert set(figures) == {"loss_train.png", "loss_val.png"}
    for name in ("loss_train.png", "loss_val.png"):
        assert [line["run"] for line in figures[name]["lines"]] == ["adamw-lr1e-5", "sgd-lr0.01", "lora-lr2e-4"]
        assert figures[name]["missing"] == ["sgd-lr0.02"]
        assert figures[name]["epoch_boundaries"] == [10, 20]
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_math500_is_named_and_not_called_smoke(tmp_path: Path) -> None:
    root = tmp_path / "study"
    write_json(root / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw"))
    correct = [i % 2 == 0 for i in range(500)]
    write_eval(root / "eval/base", eval_summary(0.5, 500), graded_rows(correct))
    text = write_report([root], tmp_path / "report").read_text()
    assert "- **Evaluation data:** `ricdomolm/MATH-500` (test split, 500 problems; MATH-500)" in text
    assert "smoke" not in text.lower() and "±4.4 points" in text  # Wilson 250/500: 45.6-54.4%
    assert "on a CPU" not in text


def test_diverged_runs_are_shown_diverged_and_never_best(tmp_path: Path) -> None:
    root = tmp_path / "study"
    write_json(root / "train/sgd-lr0.01/run_summary.json", run_summary("sgd", lr=0.01, val=(1.1, 0.95)))
    # Stopped on a non-finite gradient norm at step 12: its losses look fine, and the lowest, but it diverged.
    write_json(root / "train/sgd-lr0.1/run_summary.json",
               run_summary("sgd", lr=0.1, val=(0.5, 0.3), diverged=True, diverged_step=12))  # fmt: skip
    # No flag, but a NaN loss from step 15 on.
    nan_run = run_summary("sgd", lr=0.3, val=(0.6, math.nan), train_loss=[[5, 1.0], [10, 0.8], [15, math.nan]])
    write_json(root / "train/sgd-lr0.3/run_summary.json", nan_run)
    text = write_report([root], tmp_path / "report").read_text()
    assert rows_of(text, "| run | method | learning rate |") == [
        "| sgd-lr0.01 | sgd | 0.01 | n/a | 20 | 0.7000 | 0.9500 | 0.9500 (step 20) | ✓ best |",
        "| sgd-lr0.1 | sgd | 0.1 | n/a | 20 | diverged at step 12 | diverged at step 12 | 0.3000 (step 20) "
        "| diverged |",
        "| sgd-lr0.3 | sgd | 0.3 | n/a | 20 | diverged at step 15 | diverged at step 15 | 0.6000 (step 10) "
        "| diverged |",
    ]
    assert "- sgd-lr0.1 diverged (non-finite loss) at step 12; its loss, memory and time are left out" in text
    assert "- sgd's lowest validation loss was 0.950 at step 20." in text
    resources = (tmp_path / "report" / "resources.md").read_text()
    assert "| sgd-lr0.1 (diverged) | sgd |" in resources


def test_everything_missing_is_shown_missing(tmp_path: Path) -> None:
    """Only unfinished training runs, no evaluation at all: every value cell says missing, nothing is invented."""
    root = tmp_path / "study"
    write_json(root / "train/adamw-lr1e-5/stage_config.json", {"stage": "train", "method": "adamw"})
    (root / "eval").mkdir()
    write_report([root], tmp_path / "report")
    accuracy = (tmp_path / "report" / "accuracy.md").read_text()
    assert rows_of(accuracy, "| model | evaluated |") == [
        "| base | —" + " | missing" * 7 + " |",
        "| adamw | —" + " | missing" * 7 + " |",
    ]
    assert "_missing: no evaluation has a subject breakdown_" in accuracy
    assert "_No paired comparison: fewer than two finished evaluations._" in accuracy
    resources = (tmp_path / "report" / "resources.md").read_text()
    assert rows_of(resources, "| run |")[0] == "| adamw-lr1e-5 | adamw" + " | missing" * 12 + " |"
    figures = json.loads((tmp_path / "report" / "figures.json").read_text())
    assert figures["loss_train.png"]["lines"] == [] and figures["loss_train.png"]["missing"] == ["adamw-lr1e-5"]
    assert (tmp_path / "report" / "problem_diff.jsonl").read_text() == ""


def test_missing_cells_lists_every_gap(study: Path, tmp_path: Path) -> None:
    write_report([study], tmp_path / "report")
    found = missing_cells(tmp_path / "report")
    assert "report.md convergence: sgd-lr0.02 / steps: missing" in found
    assert "resources.md resources: sgd-lr0.02 / tokens/s: missing" in found
    assert {line.split(":")[0] for line in found} == {"report.md convergence", "report.md resources",
                                                      "resources.md resources"}  # fmt: skip
    # A study where everything finished has none.
    (study / "train/sgd-lr0.02/stage_config.json").unlink()
    (study / "train/sgd-lr0.02").rmdir()
    write_report([study], tmp_path / "complete")
    assert missing_cells(tmp_path / "complete") == []


def test_table_rows_reads_cells_back() -> None:
    text = "x\n| a | b |\n|---|---:|\n| 1 | p \\| q |\n| — | missing |\n\nafter"
    assert table_rows(text, ["a", "b"]) == [["1", "p | q"], ["—", "missing"]]
    assert table_rows(text, ["a", "c"]) is None


# ---- the best run, names ---------------------------------------------------------------------------------------------


def test_best_run_rule() -> None:
    def summary(lr: float, final: float, interrupted: bool = False) -> Any:
        return run_summary("adamw", lr=lr, val=(5.0, final), interrupted=interrupted)

    assert select_best([("a", summary(0.1, 2.0)), ("b", summary(0.3, 1.5))]) == "b"
    # The final loss decides, not the lowest one along the way; diverged and interrupted runs are not eligible.
    assert select_best([("a", summary(0.1, 2.0)), ("b", summary(0.3, math.nan)), ("c", summary(1.0, 1.0, True))]) == "a"
    assert select_best([("b", summary(0.3, 1.0)), ("a", summary(0.1, 1.0))]) == "a"  # tie: smaller rate
    assert select_best([("a", None), ("b", run_summary(eval_loss=[]))]) is None


def test_format_lr() -> None:
    assert [format_lr(x) for x in (0.3, 0.05, 0.01, 3e-3, 2e-4, 1.5e-5, 5e-6)] == [
        "0.3", "0.05", "0.01", "3e-3", "2e-4", "1.5e-5", "5e-6",
    ]  # fmt: skip


# ---- make_report.py ------------------------------------------------------------------------------------------------


def test_make_report_cli_maps_loose_eval_dirs(study: Path, tmp_path: Path, capsys) -> None:
    """Run dirs and eval dirs given one by one: an eval of a listed run's folder takes that run's method."""
    run = study / "train" / "adamw-lr1e-5"
    loose = tmp_path / "evals" / "my-adamw-eval"
    write_eval(loose, eval_summary(0.5, 4, model=str(run)))
    base = tmp_path / "evals" / "qwen-base"
    write_eval(base, eval_summary(0.25, 4))
    make_report.main([str(run), str(loose), str(base), "--output", str(tmp_path / "out"), "--log_scale"])
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'out' / 'report.md'}"
    runs, evals = collect([run, loose, base])
    assert [(e.label, e.run) for e in evals] == [("adamw", "adamw-lr1e-5"), ("base", None)]
    accuracy = (tmp_path / "out" / "accuracy.md").read_text()
    # No generations: the interval comes from summary.json alone (Wilson 2/4: 15.0-85.0%).
    assert "| adamw | adamw-lr1e-5 | 50.00% | 15.0–85.0% | +25.00 | 2 / 4 |" in accuracy
    assert json.loads((tmp_path / "out" / "figures.json").read_text())["loss_val.png"]["log_scale"] is True


def _refused(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        make_report.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_make_report_bad_path_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    _refused(capsys, [str(tmp_path / "nope"), "--output", str(tmp_path / "out")], "not found")
    _refused(capsys, [str(tmp_path / "empty"), "--output", str(tmp_path / "out")], "is neither a study dir")


def test_two_studies_get_one_report_each(study: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "study-b"
    write_json(other / "train/adamw-lr2e-5/run_summary.json", run_summary("adamw", lr=2e-5))
    write_eval(other / "eval/base", eval_summary(0.9, 20))
    out = tmp_path / "reports"
    make_report.main([str(study), str(other), "--output", str(out)])
    assert capsys.readouterr().out.splitlines() == [f"report: {out / 'study' / 'report.md'}",
                                                    f"report: {out / 'study-b' / 'report.md'}"]  # fmt: skip
    assert "adamw-lr2e-5" not in (out / "study" / "report.md").read_text()
    assert "90.00%" in (out / "study-b" / "accuracy.md").read_text()
    assert "adamw-lr1e-5" not in (out / "study-b" / "report.md").read_text()
    # Never merged: with other dirs it is unknown which study they belong to; two folders of one name would clash.
    run = study / "train" / "adamw-lr1e-5"
    _refused(capsys, [str(study), str(other), str(run), "--output", str(out)], "make one report per study")
    twin = tmp_path / "elsewhere" / "study"
    write_json(twin / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw"))
    _refused(capsys, [str(study), str(twin), "--output", str(out)], "both named 'study'")
    with pytest.raises(Exception, match="a report covers one study"):
        collect([study, other])


def test_study_config_limits_the_runs(study: Path) -> None:
    """Folders left from an earlier grid are not part of the study that wrote study_config.json."""
    write_json(study / "train/sgd-lr0.5/run_summary.json", run_summary("sgd", lr=0.5, val=(1.0, 0.1)))  # would win
    write_eval(study / "eval/old-method", eval_summary(0.9, 4))
    runs, evals = collect([study])
    assert "sgd-lr0.5" in [r.name for r in runs]
    write_json(study / "study_config.json", {"runs": ["adamw-lr1e-5", "sgd-lr0.01", "sgd-lr0.02", "lora-lr2e-4"],
                                             "methods": ["adamw", "sgd", "lora"]})  # fmt: skip
    runs, evals = collect([study])
    assert [r.name for r in runs] == ["adamw-lr1e-5", "sgd-lr0.01", "sgd-lr0.02", "lora-lr2e-4"]
    assert [e.label for e in evals] == ["adamw", "base", "lora"]
