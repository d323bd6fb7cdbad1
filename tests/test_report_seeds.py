"""The report of a study with seeds, checkpoint evaluations and precision records (issue 17), from files built by the
schema factory: the interval over seeds and problems checked by hand, pairing by problem and seed, the best grid
point on the seed mean, trial and seed counts with the grid-edge flag, the two new figures, the evaluation-precision
warning, measured against predicted memory, and stale evaluations never shown under the best run's name."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mathsft import stats
from mathsft.analysis import analyze
from mathsft.artifacts import select_best, select_best_grid_point
from mathsft.report import accuracy_by_step_figure, accuracy_markdown, lr_sensitivity_figure, write_report
from mathsft.results import collect
from summary_factory import eval_summary, graded_rows, run_summary, write_eval, write_json, write_seeded_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---- the interval over seeds and problems, by hand -----------------------------------------------------------------


def test_hierarchical_interval_replays_the_documented_draws() -> None:
    """Each draw: S seed indices, then P problem indices (one block), one problem resample for every drawn seed."""
    table = [[1, 0, 1], [0, 0, 1]]
    resamples = 2000
    rng = np.random.default_rng(7)
    seeds = rng.integers(0, 2, size=(resamples, 2))
    problems = rng.integers(0, 3, size=(resamples, 3))
    means = [sum(table[s][p] for s in seeds[i] for p in problems[i]) / 6 for i in range(resamples)]
    low, high = np.percentile(means, [2.5, 97.5])
    assert stats.hierarchical_interval(table, resamples, seed=7) == (low, high)


def test_hierarchical_interval_matches_the_exact_bootstrap_distribution() -> None:
    """All 4 seed draws x 3125 problem draws of a 2 x 5 table, enumerated: the exact 2.5% and 97.5% quantiles are
    0.2 and 1.0 (cumulative 0.0213 before 0.2 and 0.0957 after; 0.9104 before 1.0), which 20,000 draws find."""
    table = np.array([[1, 1, 0, 1, 1], [0, 1, 0, 1, 0]], dtype=float)
    outcomes = [table[list(s)][:, list(p)].mean() for s in itertools.product(range(2), repeat=2)
                for p in itertools.product(range(5), repeat=5)]  # fmt: skip
    values, counts = np.unique(np.round(outcomes, 12), return_counts=True)
    cdf = np.cumsum(counts) / len(outcomes)
    exact = (values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)])
    assert exact == (0.2, 1.0)
    assert stats.hierarchical_interval(table.tolist(), 20_000, seed=3) == pytest.approx(exact)
    # Resampling each seed's problems apart would be narrower: the shared problem difficulty would average out.
    one_seed = stats.bootstrap_accuracy_interval(table.mean(axis=0).tolist(), 20_000, seed=3)
    assert one_seed[1] - one_seed[0] <= exact[1] - exact[0]


def test_paired_comparison_by_seed_by_hand() -> None:
    a = {1: [1, 1, 0, 1], 2: [1, 0, 0, 1]}
    b = {1: [0, 1, 0, 0], 2: [1, 1, 0, 0]}
    result = stats.paired_comparison_by_seed(a, b, resamples=2000, seed=5)
    # (seed, problem) pairs: seed 1 a-only on p0, p3; seed 2 a-only on p3, b-only on p1: 3 vs 1 of 8 pairs.
    assert (result.only_a, result.only_b, result.n, result.binary) == (3, 1, 8, True)
    assert result.difference_points == pytest.approx(100 * 2 / 8)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)  # exact McNemar on 3 vs 1
    differences = [[x - y for x, y in zip(a[s], b[s], strict=True)] for s in (1, 2)]
    low, high = stats.hierarchical_interval(np.array(differences) * 0.5 + 0.5, 2000, seed=5)  # same draws, in [0, 1]
    assert result.ci95_points == pytest.approx(((2 * low - 1) * 100, (2 * high - 1) * 100))
    # One seed: exactly today's paired comparison.
    one = stats.paired_comparison_by_seed({1: a[1]}, {1: b[1]})
    assert one == stats.paired_comparison(a[1], b[1])
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_comparison_by_seed(a, {1: b[1]})


# ---- the best grid point ---------------------------------------------------------------------------------------------


def _summary(lr: float, final: float, **kw: Any) -> Any:
    return run_summary("adamw", lr=lr, val=(5.0, final), **kw)


def _pairs(grid: dict[str, list[tuple[str, Any]]]) -> list[tuple[Any, Any]]:
    """``{point: [(run, summary) of each seed]}`` as the one-pair-per-run form ``select_best_grid_point`` takes."""
    return [(point, summary) for point, seeds in grid.items() for _, summary in seeds]


def test_best_grid_point_is_chosen_on_the_seed_mean() -> None:
    grid = {
        (1e-5, None): [("lr1-s1", _summary(1e-5, 0.80)), ("lr1-s2", _summary(1e-5, 0.90))],  # mean 0.85
        (3e-5, None): [("lr3-s1", _summary(3e-5, 0.70)), ("lr3-s2", _summary(3e-5, 1.10))],  # best single run
    }
    assert select_best_grid_point(_pairs(grid)) == (1e-5, None)
    grid[(3e-5, None)][1] = ("lr3-s2", _summary(3e-5, 0.95))  # mean 0.825
    assert select_best_grid_point(_pairs(grid)) == (3e-5, None)
    grid[(3e-5, None)][1] = ("lr3-s2", _summary(3e-5, math.nan))  # one seed without a finite final loss
    assert select_best_grid_point(_pairs(grid)) == (1e-5, None)
    grid[(1e-5, None)][0] = ("lr1-s1", None)  # one seed never finished
    assert select_best_grid_point(_pairs(grid)) is None
    tie = [((3e-5, None), _summary(3e-5, 1.0)), ((1e-5, None), _summary(1e-5, 1.0))]
    assert select_best_grid_point(tie) == (1e-5, None)  # ties: the smaller rate


def test_one_seed_picks_what_select_best_picks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        candidates = [(f"run{i}", _summary(float(lr), float(loss), interrupted=bool(stop)))
                      for i, (lr, loss, stop) in enumerate(zip(rng.choice([1e-5, 3e-5, 1e-4], 4),
                                                               rng.choice([0.5, 0.7, math.nan], 4),
                                                               rng.random(4) < 0.2, strict=True))]  # fmt: skip
        # the report's keys: (rate, rank, index), one point per run when the runs are not seeds of one point
        keyed = [((s["hyperparameters"]["learning_rate"], None, i), s) for i, (_, s) in enumerate(candidates)]
        by_point = select_best_grid_point(keyed)
        assert (by_point and candidates[by_point[2]][0]) == select_best(candidates)


# ---- a seeded study --------------------------------------------------------------------------------------------------

BASE = [i < 5 for i in range(20)]
ADAMW = {1: [i < 12 for i in range(20)], 2: [i < 8 or i in (15, 16) for i in range(20)]}
SGD1 = [i < 6 for i in range(20)]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """adamw: 2 rates x seeds 1, 2 (the better single run at 3e-5, the better mean at 1e-5: the grid's low edge);
    sgd: 3 rates, 0.1 diverges on seed 2, best 0.03 (inside the grid); seed 2 of sgd not evaluated yet; checkpoint
    evaluations at step 10; sgd's update mostly rounds away in bfloat16."""
    root = tmp_path_factory.mktemp("seeded") / "study"
    precision = {"adamw": 0.92, "sgd": 0.31}
    for seed, (v1, v3) in {1: (0.80, 0.70), 2: (0.90, 1.10)}.items():
        for lr, final in ((1e-5, v1), (3e-5, v3)):
            write_seeded_run(root, "adamw", lr, seed, val=(1.2, final), eval_precision={
                "dtype": "bfloat16", "overall": precision["adamw"], "by_kind": {"attention": 0.95, "mlp": 0.9}})
    for seed in (1, 2):
        for lr, final in ((0.01, 1.0), (0.03, 0.95), (0.1, 0.9)):
            broken = {"diverged": True, "diverged_step": 12} if lr == 0.1 and seed == 2 else {}
            write_seeded_run(root, "sgd", lr, seed, val=(1.2, final), eval_precision={
                "dtype": "bfloat16", "overall": precision["sgd"], "by_kind": {"mlp": 0.31}}, **broken)
    write_eval(root / "eval/base", eval_summary(0.25, 20, no_box=8), graded_rows(BASE), None, method=None, seed=None,
               step=None)  # fmt: skip
    for seed, correct in ADAMW.items():
        run = f"adamw-lr1e-5-seed{seed}"
        accuracy = sum(correct) / 20
        write_eval(root / f"eval/adamw-seed{seed}", eval_summary(accuracy, 20, no_box=seed), graded_rows(correct),
                   run, method="adamw", seed=seed, step=None)  # fmt: skip
        write_eval(root / f"eval/adamw-seed{seed}-step10", eval_summary(0.3 + 0.1 * seed, 20, no_box=4),
                   graded_rows([i < 6 + 2 * seed for i in range(20)]), run, method="adamw", seed=seed, step=10)
    write_eval(root / "eval/sgd-seed1", eval_summary(0.3, 20, no_box=2), graded_rows(SGD1), "sgd-lr0.03-seed1",
               method="sgd", seed=1, step=None)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def report(seeded: Path) -> Path:
    """The report of the seeded study, written once for the tests that read it (figures take seconds on a CPU)."""
    return write_report([seeded], seeded.parent / "report").parent


def rows_of(markdown: str, header_start: str) -> list[str]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    return [line for line in itertools.takewhile(lambda x: x.startswith("|"), lines[start + 2:])]


def test_accuracy_is_the_seed_mean_with_the_hierarchical_interval(report: Path) -> None:
    text = (report / "accuracy.md").read_text()
    table = [[float(c) for c in correct] for correct in ADAMW.values()]
    low, high = stats.hierarchical_interval(table, 10_000, seed=0)
    accuracy = (12 + 10) / 40
    wilson = {k: "–".join(f"{100 * x:.1f}" for x in stats.wilson_interval(k, 20)) + "%" for k in (5, 6)}
    assert rows_of(text, "| model | evaluated |") == [
        f"| base | Qwen/Qwen3-0.6B-Base | 25.00% | {wilson[5]} | (base) | 5 / 20 | 8 (40.0%) | 0 (0.0%) | 0 (0.0%) |",
        # the mean over seeds 1, 2; counts over both seeds' 40 answers
        f"| adamw | adamw-lr1e-5-seed1, adamw-lr1e-5-seed2 | {100 * accuracy:.2f}% "
        f"| {100 * low:.1f}–{100 * high:.1f}% | +30.00 | 22 / 40 | 3 (7.5%) | 0 (0.0%) | 0 (0.0%) |",
        # one seed evaluated: its own (Wilson) interval, as without seeds; the other seed is named missing
        f"| sgd | sgd-lr0.03-seed1 (seed 2: missing) | 30.00% | {wilson[6]} | +5.00 | 6 / 20 | 2 (10.0%) | 0 (0.0%) "
        "| 0 (0.0%) |",
    ]
    per_seed = rows_of(text.split("## Per seed")[1], "| model | evaluated |")
    assert [row.split(" | ")[:3] for row in per_seed] == [["| adamw seed 1", "adamw-lr1e-5-seed1", "60.00%"],
                                                          ["| adamw seed 2", "adamw-lr1e-5-seed2", "50.00%"]]
    assert "step10" not in text.split("## Evaluation settings")[0]  # checkpoints are not final results
    markdown = (report / "report.md").read_text()
    assert "hierarchical bootstrap" in markdown and "- sgd seed 2: missing" in markdown


def test_comparisons_pair_by_problem_and_seed(seeded: Path) -> None:
    analysis = analyze(*collect([seeded]))
    by_name = {(p.a, p.b): p for p in analysis.comparisons}
    base = [float(x) for x in BASE]
    expected = stats.paired_comparison_by_seed({s: [float(x) for x in c] for s, c in ADAMW.items()},
                                               {1: base, 2: base})  # fmt: skip
    assert by_name[("adamw", "base")].result == expected and by_name[("adamw", "base")].seeds == 2
    assert expected.only_a == 7 + 5 and expected.only_b == 0 and expected.n == 40
    # adamw (seeds 1, 2) against sgd (seed 1 only): paired on seed 1 alone, i.e. today's comparison.
    sgd = by_name[("adamw", "sgd")]
    assert sgd.seeds == 1 and sgd.result == stats.paired_comparison(ADAMW[1], SGD1)


def test_trials_seeds_and_the_grid_edge(report: Path) -> None:
    text = (report / "report.md").read_text()
    assert rows_of(text, "| method | learning rates |") == [
        "| adamw | 1e-5, 3e-5 | n/a | 2 | 2 (1, 2) | 1e-5 | best at the grid's edge: widen it (lowest rate tried) |",
        "| sgd | 0.01, 0.03, 0.1 | n/a | 3 | 2 (1, 2) | 0.03 |  |",
    ]
    grid = rows_of(text, "| method | learning rate | LoRA r | seeds |")
    assert grid[0] == "| adamw | 1e-5 | — | 1, 2 | 0.8000, 0.9000 | 0.8500 | 55.00% (2) | ✓ best |"
    assert grid[1] == "| adamw | 3e-5 | — | 1, 2 | 0.7000, 1.1000 | 0.9000 | — |  |"
    assert grid[4] == "| sgd | 0.1 | — | 1, 2 | 0.9000, diverged | — | — |  |"
    # every seed of the best grid point is marked best in the convergence table
    assert "| adamw-lr1e-5-seed2 | adamw | 1e-5 | n/a | 20 | 0.7000 | 0.9000 | 0.9000 (step 20) | ✓ best |" in text


def test_lr_sensitivity_png_has_one_line_per_method(seeded: Path, report: Path) -> None:
    import matplotlib.pyplot as plt

    analysis = analyze(*collect([seeded]))
    fig, info = lr_sensitivity_figure(analysis.grid)
    loss_ax, accuracy_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["adamw", "sgd"]
    assert loss_ax.get_xscale() == "log"
    adamw, sgd = loss_ax.get_lines()
    assert list(adamw.get_xdata()) == [1e-5, 3e-5] and list(adamw.get_ydata()) == pytest.approx([0.85, 0.9])
    assert list(sgd.get_xdata()) == [0.01, 0.03]  # 0.1 has a diverged seed: no mean
    assert info["diverged"] == [["sgd", 0.1]]
    assert [line.get_label() for line in accuracy_ax.get_lines()] == ["adamw", "sgd"]
    plt.close(fig)
    png = report / "lr_sensitivity.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and plt.imread(png).ndim == 3
    figures = json.loads((report / "figures.json").read_text())
    assert [line["label"] for line in figures["lr_sensitivity.png"]["lines"]] == ["adamw", "sgd"]


def test_accuracy_by_step_from_stage_records(seeded: Path, report: Path) -> None:
    import matplotlib.pyplot as plt

    analysis = analyze(*collect([seeded]))
    # base as step 0, checkpoints at step 10 (seeds 1, 2: 40% and 50%), the final models at the run's step 20
    assert [(p.method, p.seed, p.step, p.accuracy) for p in analysis.steps] == [
        ("adamw", None, 0, 0.25), ("adamw", 1, 10, 0.4), ("adamw", 2, 10, 0.5), ("adamw", 1, 20, 0.6),
        ("adamw", 2, 20, 0.5),
    ]  # fmt: skip
    assert analysis.steps[0].no_box_share == pytest.approx(8 / 20)
    fig, _ = accuracy_by_step_figure(analysis.steps)
    accuracy_ax, box_ax = fig.axes
    assert [line.get_label() for line in accuracy_ax.get_lines()] == ["adamw"]
    line = accuracy_ax.get_lines()[0]
    assert list(line.get_xdata()) == [0, 10, 20] and list(line.get_ydata()) == pytest.approx([25, 45, 55])
    assert list(box_ax.get_lines()[0].get_ydata()) == pytest.approx([40, 20, 100 * 1.5 / 20])
    plt.close(fig)
    text = (report / "report.md").read_text()
    png = report / "accuracy_by_step.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and plt.imread(png).ndim == 3
    assert "![Accuracy over training](accuracy_by_step.png)" in text
    assert "| adamw | 0: 25.00%, 10: 45.00%, 20: 55.00% |" in text


def test_update_that_rounds_away_is_reported(report: Path) -> None:
    text = (report / "report.md").read_text()
    rows = rows_of(text, "| method | run | evaluation dtype |")
    # no rounding_error recorded here: the cast-error column is empty
    assert rows[0] == "| adamw | adamw-lr1e-5-seed1 | bfloat16 | 92.00% | 95.00% | 90.00% | — | — | — | — |  |"
    assert rows[2] == "| sgd | sgd-lr0.03-seed1 | bfloat16 | 31.00% | — | 31.00% | — | — | — | — " \
                      "| mostly rounds away at the evaluation dtype |"  # fmt: skip
    assert "- **sgd** (sgd-lr0.03-seed1): only 31.00% of the update survives the cast to bfloat16" in text
    assert "- sgd's fine-tuning update mostly rounds away at bfloat16: only 31.0% of it survives" in text
    assert "adamw's fine-tuning update mostly rounds away" not in text
    settings = (report / "accuracy.md").read_text().split("## Evaluation settings")[1]
    assert "| adamw seed 1 | `Qwen/Qwen3-0.6B-Base` |" in settings and "| bfloat16 |" in settings


def test_measured_beside_predicted_memory(report: Path) -> None:
    """The static breakdown (AdamW on 596,049,920 float32 parameters: 8.88 GiB) beside the measured 11.00 GiB."""
    text = (report / "resources.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| adamw | adamw-lr1e-5-seed1 | float32 |"))
    assert row.endswith("| 8.88 GiB | 11.00 GiB (GPU, allocated) | 2.12 GiB |")
    # each seed of the best grid point: 11.00 GiB allocated (epoch 2), 12.25 GiB reserved (epoch 1)
    assert rows_of(text, "| method | run | predicted static")[:2] == [
        f"| adamw | adamw-lr1e-5-seed{seed} | 8.88 GiB | 11.00 GiB | 2.12 GiB | 12.25 GiB | 1.25 GiB |"
        for seed in (1, 2)
    ]


# ---- stale evaluations, and old studies --------------------------------------------------------------------------


def test_a_stale_evaluation_is_never_shown_under_the_best_run(tmp_path: Path) -> None:
    root = tmp_path / "study"
    write_json(root / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw", lr=1e-5, val=(1.0, 0.8)))
    write_json(root / "train/adamw-lr3e-5/run_summary.json", run_summary("adamw", lr=3e-5, val=(1.0, 0.9)))
    write_eval(root / "eval/base", eval_summary(0.25, 20), graded_rows(BASE))
    # eval/adamw scored the 3e-5 run (an earlier grid chose it); the best run is now 1e-5
    write_eval(root / "eval/adamw", eval_summary(0.9, 20), graded_rows([i < 18 for i in range(20)]), "adamw-lr3e-5")
    analysis = analyze(*collect([root]))
    text = accuracy_markdown(analysis)
    assert "| adamw | adamw-lr1e-5" + " | missing" * 7 + " |" in text
    assert "90.00%" not in text
    assert "- Not shown: `adamw` scored `adamw-lr3e-5`, which is not adamw's best run (adamw-lr1e-5)" in text
    assert "adamw vs base" not in text


def test_a_stale_seed_evaluation_is_kept_apart(seeded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "study"
    shutil.copytree(seeded, copy, ignore=shutil.ignore_patterns("report"))
    record = copy / "eval/adamw-seed2/stage_config.json"
    write_json(record, json.loads(record.read_text()) | {"run": "adamw-lr3e-5-seed2"})
    text = accuracy_markdown(analyze(*collect([copy])))
    assert "| adamw | adamw-lr1e-5-seed1 (seed 2: missing) | 60.00% |" in text
    assert "- Not shown: `adamw-seed2` scored `adamw-lr3e-5-seed2`" in text


def test_findings_speak_of_seeds(report: Path) -> None:
    text = (report / "report.md").read_text()
    assert "- adamw reached the lowest validation loss, 0.850 (mean over 2 seeds) (then sgd 0.950 (mean over 2 " \
           "seeds))." in text  # fmt: skip
    assert "McNemar p < 0.001; 12 (seed, problem) pairs solved only by adamw, 0 only by base)" in text
    # sgd has one evaluated seed: paired with adamw on that seed alone, counted in problems
    assert "6 problems solved only by adamw, 0 only by sgd" in text


def test_a_loose_evaluation_of_another_run_keeps_that_runs_name(tmp_path: Path) -> None:
    """An evaluation folder given on its own that scored the worse run: shown under that run, never as the method."""
    best, worse = tmp_path / "adamw-lr1e-5", tmp_path / "adamw-lr3e-5"
    write_json(best / "run_summary.json", run_summary("adamw", lr=1e-5, val=(1.0, 0.8)))
    write_json(worse / "run_summary.json", run_summary("adamw", lr=3e-5, val=(1.0, 0.9)))
    loose = tmp_path / "evals" / "mine"
    write_eval(loose, eval_summary(0.9, 20, model=str(worse)))
    text = accuracy_markdown(analyze(*collect([best, worse, loose])))
    assert "| adamw | adamw-lr1e-5" + " | missing" * 7 + " |" in text
    assert "| adamw-lr3e-5 | adamw-lr3e-5 | 90.00% |" in text
    assert ("- `mine` scored `adamw-lr3e-5`, which is not adamw's best run (adamw-lr1e-5): shown as `adamw-lr3e-5`"
            in text)


def test_checkpoints_of_a_study_without_seeds(tmp_path: Path) -> None:
    """No seeds (records say seed None): the method's row is its one evaluation; checkpoints still give the curve."""
    root = tmp_path / "study"
    write_json(root / "train/adamw-lr1e-5/run_summary.json", run_summary("adamw", lr=1e-5))
    write_json(root / "train/adamw-lr1e-5/stage_config.json",
               {"stage": "train", "method": "adamw", "learning_rate": 1e-5, "lora_r": None, "seed": None})
    write_eval(root / "eval/base", eval_summary(0.25, 20), graded_rows(BASE), None, method=None, seed=None, step=None)
    write_eval(root / "eval/adamw", eval_summary(0.5, 20), graded_rows([i < 10 for i in range(20)]), "adamw-lr1e-5",
               method="adamw", seed=None, step=None)  # fmt: skip
    write_eval(root / "eval/adamw-step10", eval_summary(0.4, 20), graded_rows([i < 8 for i in range(20)]),
               "adamw-lr1e-5", method="adamw", seed=None, step=10)  # fmt: skip
    analysis = analyze(*collect([root]))
    assert analysis.extended
    assert [(r.label, r.summary and r.summary["accuracy"]) for r in analysis.accuracy] == [("base", 0.25),
                                                                                          ("adamw", 0.5)]
    assert [(p.step, p.accuracy) for p in analysis.steps] == [(0, 0.25), (10, 0.4), (20, 0.5)]
    assert [(c.a, c.b, c.seeds) for c in analysis.comparisons] == [("adamw", "base", 1)]


def test_every_report_file_is_one_the_report_recognises_as_its_own(report: Path) -> None:
    """make_report.py replaces a file only when it recognises it as an earlier report's (ownership._REPORT_SIGNS):
    a file it writes without an entry there would overwrite a user's file of that name unasked."""
    from mathsft import ownership

    written = {path.name for path in report.iterdir()}
    assert written <= set(ownership._REPORT_SIGNS), written - set(ownership._REPORT_SIGNS)
    assert all(ownership._written_by_report(report / name) for name in written)
