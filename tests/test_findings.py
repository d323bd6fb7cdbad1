"""Findings sentences (mathsft.findings) from hand-made summaries: exact wording, and no unsupported claim."""

from __future__ import annotations

from mathsft.findings import Comparison, MethodResult, findings
from mathsft.stats import PairedComparison, paired_comparison


def gpu_study() -> list[MethodResult]:
    return [
        MethodResult("base", accuracy=0.03, accuracy_ci95=(0.018, 0.05)),
        MethodResult("adamw", lowest_val_loss=0.8123, lowest_val_loss_step=120, peak_memory_gib=7.4,
                     memory_kind="cuda", seconds_per_epoch=754.2, accuracy=0.452, accuracy_ci95=(0.408, 0.497)),
        MethodResult("sgd", lowest_val_loss=1.2034, lowest_val_loss_step=200, peak_memory_gib=5.25,
                     memory_kind="cuda", seconds_per_epoch=612.0, accuracy=0.2, accuracy_ci95=(0.16, 0.24)),
        MethodResult("lora", lowest_val_loss=0.845, lowest_val_loss_step=120, peak_memory_gib=3.1,
                     memory_kind="cuda", seconds_per_epoch=500.0, accuracy=0.4, accuracy_ci95=(0.36, 0.44)),
    ]


def comparison(a: str, b: str, diff: float, ci: tuple[float, float], p: float, only_a: int, only_b: int,
               binary: bool = True) -> Comparison:
    return Comparison(a, b, PairedComparison(diff, ci, p, only_a, only_b, 500, binary))


def test_a_gpu_study():
    comparisons = [
        comparison("adamw", "base", 42.2, (38.0, 46.4), 1e-20, 215, 4),
        comparison("adamw", "lora", 1.2, (-2.0, 4.4), 0.45, 20, 14),
        comparison("sgd", "adamw", -25.2, (-29.0, -21.4), 3e-9, 10, 136),
    ]
    assert findings(gpu_study(), comparisons) == [
        "adamw reached the lowest validation loss, 0.812 at step 120 (then lora 0.845 at step 120; sgd 1.203 at "
        "step 200).",
        "Peak GPU memory: adamw 7.40 GiB (the most), sgd 5.25 GiB (71% of adamw), lora 3.10 GiB (42% of adamw).",
        "Time per epoch (on GPU): adamw 12 min 34 s (the longest), sgd 10 min 12 s (81% of adamw), lora 8 min 20 s "
        "(66% of adamw).",
        "Accuracy: adamw 45.2% (95% CI 40.8% to 49.7%), lora 40.0% (95% CI 36.0% to 44.0%), sgd 20.0% (95% CI 16.0% "
        "to 24.0%), base 3.0% (95% CI 1.8% to 5.0%).",
        "adamw vs base: +42.2 points (95% CI +38.0 to +46.4; McNemar p < 0.001; 215 problems solved only by adamw, "
        "4 only by base): significant at the 5% level.",
        "adamw vs lora: +1.2 points (95% CI -2.0 to +4.4; McNemar p = 0.450; 20 problems solved only by adamw, 14 "
        "only by lora): not significant at the 5% level (the interval contains 0).",
        "sgd vs adamw: -25.2 points (95% CI -29.0 to -21.4; McNemar p < 0.001; 10 problems solved only by sgd, 136 "
        "only by adamw): significant at the 5% level.",
    ]


def test_cpu_runs_speak_of_process_rss_and_indicative_times():
    methods = [
        MethodResult("adamw", peak_memory_gib=1.2, memory_kind="cpu_peak_rss", seconds_per_epoch=12.34),
        MethodResult("lora", peak_memory_gib=0.9, memory_kind="cpu_rss", seconds_per_epoch=8.0),
    ]
    assert findings(methods) == [
        "Peak process RSS (CPU runs: the whole training process, not GPU memory): adamw 1.20 GiB (the most), "
        "lora 0.90 GiB (75% of adamw).",
        "Time per epoch (on CPU, indicative): adamw 12.3 s (the longest), lora 8.0 s (65% of adamw).",
    ]


def test_rss_is_never_compared_with_gpu_memory():
    methods = [
        MethodResult("adamw", peak_memory_gib=7.4, memory_kind="cuda", seconds_per_epoch=100.0),
        MethodResult("sgd", peak_memory_gib=1.1, memory_kind="cpu_peak_rss", seconds_per_epoch=900.0),
    ]
    assert findings(methods) == []  # one run of each kind, one per device: nothing can be compared


def test_missing_numbers_give_no_sentence():
    assert findings([]) == []
    assert findings([MethodResult("adamw"), MethodResult("sgd")]) == []
    # Memory with no known kind is not compared: it could be either measure.
    assert findings([MethodResult("a", peak_memory_gib=2.0), MethodResult("b", peak_memory_gib=1.0)]) == []
    assert findings([MethodResult("adamw", lowest_val_loss=0.5, lowest_val_loss_step=None)]) == [
        "adamw's lowest validation loss was 0.500."
    ]


def test_equal_losses_tie():
    methods = [
        MethodResult("sgd", lowest_val_loss=0.9, lowest_val_loss_step=40),
        MethodResult("adamw", lowest_val_loss=0.81249, lowest_val_loss_step=120),
        MethodResult("lora", lowest_val_loss=0.8121, lowest_val_loss_step=100),
    ]
    assert findings(methods) == [
        "lora and adamw tie for the lowest validation loss, lora 0.812 at step 100; adamw 0.812 at step 120 "
        "(then sgd 0.900 at step 40)."
    ]


def test_no_significance_claimed_without_both_criteria():
    comparisons = [
        comparison("sgd", "base", 3.0, (-0.2, 6.2), 0.049, 25, 10),  # test rejects, interval contains 0
        comparison("lora", "base", 2.6, (0.2, 5.0), 0.051, 24, 11),  # interval excludes 0, test does not reject
        comparison("adamw", "sgd", 0.0, (-2.4, 2.4), 1.0, 12, 12),
    ]
    sentences = findings([], comparisons)
    assert sentences == [
        "sgd vs base: +3.0 points (95% CI -0.2 to +6.2; McNemar p = 0.049; 25 problems solved only by sgd, 10 only "
        "by base): not significant at the 5% level (McNemar p < 0.05, but the interval contains 0).",
        "lora vs base: +2.6 points (95% CI +0.2 to +5.0; McNemar p = 0.051; 24 problems solved only by lora, 11 "
        "only by base): not significant at the 5% level (the interval excludes 0, but McNemar p >= 0.05).",
        "adamw vs sgd: 0.0 points (95% CI -2.4 to +2.4; McNemar p = 1.000; 12 problems solved only by adamw, 12 "
        "only by sgd): not significant at the 5% level (the interval contains 0).",
    ]
    assert not any(s.endswith(": significant at the 5% level.") for s in sentences)


def test_several_samples_per_problem_use_the_sign_test_wording():
    sentences = findings([], [comparison("adamw", "base", 10.5, (6.0, 15.0), 0.0004, 80, 20, binary=False)])
    assert sentences == [
        "adamw vs base: +10.5 points (95% CI +6.0 to +15.0; exact sign test p < 0.001; 80 problems scored higher "
        "by adamw, 20 by base): significant at the 5% level."
    ]


def test_a_computed_comparison_of_identical_answers():
    answers = [True, False, True] * 10
    sentences = findings([], [Comparison("adamw", "sgd", paired_comparison(answers, answers))])
    assert sentences == [
        "adamw vs sgd: 0.0 points (95% CI 0.0 to 0.0; McNemar p = 1.000; 0 problems solved only by adamw, 0 only "
        "by sgd): not significant at the 5% level (the interval contains 0)."
    ]


def test_diverged_and_interrupted_runs_are_named_and_left_out():
    methods = gpu_study()[1:3] + [
        MethodResult("sgd-lr1", lowest_val_loss=float("nan"), peak_memory_gib=9.0, memory_kind="cuda",
                     seconds_per_epoch=2000.0, diverged=True),
        MethodResult("lora", lowest_val_loss=0.2, lowest_val_loss_step=10, peak_memory_gib=1.0, memory_kind="cuda",
                     seconds_per_epoch=5.0, interrupted=True),
    ]
    assert findings(methods) == [
        "adamw reached the lowest validation loss, 0.812 at step 120 (then sgd 1.203 at step 200).",
        "Peak GPU memory: adamw 7.40 GiB (the most), sgd 5.25 GiB (71% of adamw).",
        "Time per epoch (on GPU): adamw 12 min 34 s (the longest), sgd 10 min 12 s (81% of adamw).",
        "Accuracy: adamw 45.2% (95% CI 40.8% to 49.7%), sgd 20.0% (95% CI 16.0% to 24.0%).",
        "sgd-lr1 diverged (non-finite loss); its loss, memory and time are left out of the comparisons above.",
        "lora was interrupted before it finished; its loss, memory and time are left out of the comparisons above.",
    ]


def test_time_follows_an_explicit_device_and_long_runs_read_in_hours():
    methods = [
        MethodResult("adamw", seconds_per_epoch=7300.0, device="cuda"),
        MethodResult("sgd", seconds_per_epoch=3650.0, device="cuda"),
        MethodResult("lora", seconds_per_epoch=30.0, device="cpu"),
    ]
    assert findings(methods) == [
        "Time per epoch (on GPU): adamw 2 h 02 min (the longest), sgd 1 h 01 min (50% of adamw)."
    ]


def test_a_diverged_run_names_its_step():
    methods = [
        MethodResult("adamw", lowest_val_loss=0.9, lowest_val_loss_step=20),
        MethodResult("sgd-lr1", lowest_val_loss=0.1, lowest_val_loss_step=10, diverged=True, diverged_step=12),
        MethodResult("sgd-lr3", diverged=True, interrupted=True, diverged_step=4),
    ]
    assert findings(methods) == [
        "adamw's lowest validation loss was 0.900 at step 20.",  # the diverged run's lower loss is not compared
        "sgd-lr1 diverged (non-finite loss) at step 12; its loss, memory and time are left out of the comparisons "
        "above.",
        "sgd-lr3 diverged (non-finite loss) at step 4 and was interrupted; its loss, memory and time are left out of "
        "the comparisons above.",
    ]


def test_an_update_that_rounds_away_is_named():
    methods = [MethodResult("adamw", update_survival=0.93, eval_dtype="bfloat16"),
               MethodResult("sgd", update_survival=0.12, eval_dtype="bfloat16"), MethodResult("lora")]
    assert findings(methods) == [
        "sgd's fine-tuning update mostly rounds away at bfloat16: only 12.0% of it survives the cast to the "
        "evaluation dtype, so its accuracy shows less than it trained."
    ]
    assert findings([MethodResult("sgd", update_survival=0.5)]) == []  # half survives: not "mostly" rounded away


def test_an_inexact_base_is_judged_by_the_cast_error_not_the_share() -> None:
    """An fp32 base moves with the cast too: its survival share can be far above 1 for an update the cast destroys
    (precision.py). There the cast error (||kept - update|| / ||update||) decides, not the share."""
    from mathsft.findings import update_lost

    exact = {"dtype": "bfloat16", "overall": 0.2, "base_exact": True, "rounding_error": 0.9}
    assert update_lost(exact) and not update_lost(exact | {"overall": 0.8})
    noisy = {"dtype": "bfloat16", "overall": 20.0, "base_exact": False, "rounding_error": 19.0}
    assert update_lost(noisy)  # a share of 2000% that is all rounding noise: lost, not "survives"
    assert not update_lost(noisy | {"overall": 1.01, "rounding_error": 0.05})
    assert not update_lost(None) and not update_lost(noisy | {"rounding_error": None})
    sgd = MethodResult("sgd", update_survival=20.0, eval_dtype="bfloat16", update_lost=True,
                       update_rounding_error=19.0)  # fmt: skip
    assert findings([sgd]) == ["sgd's fine-tuning update is mostly lost at bfloat16: the cast changes it by 1900.0% "
                               "of its size, so its accuracy shows less than it trained."]  # fmt: skip
