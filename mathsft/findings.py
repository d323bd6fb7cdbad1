"""The report's "Findings": sentences generated from a study's numbers, each quoting the number it rests on.

Inputs are plain values (one :class:`MethodResult` per method or run, one :class:`Comparison` per paired test), not
files, so the rules are testable on hand-made numbers. No sentence is written that the data does not support:

- the lowest validation loss is compared among runs that neither diverged nor were interrupted, with finite loss;
- peak memory is compared only between runs measured the same way: CUDA peaks as GPU memory, CPU runs' peaks as
  process RSS (the whole process, never presented as GPU memory); a kind that is not known is not compared;
- times per epoch are compared only between runs on the same device; CPU times are labelled indicative;
- an accuracy difference is called significant only when its paired interval excludes 0 *and* McNemar's p < 0.05;
- diverged and interrupted runs are named, with what was left out because of it;
- a method whose fine-tuning update mostly rounds away at the evaluation dtype (less than half of it survives
  the cast, ``eval_precision.overall`` of its run summary) is named: its accuracy measures less than it trained.

    findings([MethodResult("adamw", lowest_val_loss=0.81, lowest_val_loss_step=120), ...],
             [Comparison("adamw", "base", paired_comparison(adamw_scores, base_scores)), ...])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mathsft.stats import PairedComparison

__all__ = ["Comparison", "MethodResult", "findings"]


@dataclass(frozen=True)
class MethodResult:
    """What one method (or run) measured. Every number is optional; a missing one yields no sentence about it.

    ``memory_kind`` is ``"cuda"`` (peak GPU memory allocated) or ``"cpu_rss"`` / ``"cpu_peak_rss"`` (peak resident
    set size of a CPU process). ``device`` (``"cuda"`` or ``"cpu"``) is where the time was measured; when None it
    follows ``memory_kind``. ``accuracy`` and ``accuracy_ci95`` are fractions in [0, 1].
    """

    name: str
    lowest_val_loss: float | None = None
    lowest_val_loss_step: int | None = None
    peak_memory_gib: float | None = None
    memory_kind: str | None = None
    seconds_per_epoch: float | None = None
    accuracy: float | None = None
    accuracy_ci95: tuple[float, float] | None = None
    diverged: bool = False
    interrupted: bool = False
    device: str | None = None
    diverged_step: int | None = None  # where a diverged run stopped, when known
    update_survival: float | None = None  # share of the fine-tuning update that survives the evaluation dtype
    eval_dtype: str | None = None  # the dtype that share was measured for
    update_lost: bool = False  # most of the update is lost at that dtype (:func:`update_lost`)
    update_rounding_error: float | None = None  # ||kept - update|| / ||update|| (base not exact in the dtype)
    seeds: int = 1  # training seeds behind the numbers: with several, the loss is the mean of their lowest losses

    @property
    def completed(self) -> bool:
        return not (self.diverged or self.interrupted)

    @property
    def timing_device(self) -> str | None:
        if self.device is not None:
            return self.device
        return _memory_group(self.memory_kind)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of method ``a`` against method ``b`` (difference = a - b)."""

    a: str
    b: str
    result: PairedComparison
    unit: str = "problems"  # what the counts count: "(seed, problem) pairs" when paired by problem and seed


ROUNDS_AWAY_BELOW = 0.5  # less than half of the update survives the cast: it "mostly rounds away"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def update_lost(precision: Mapping[str, Any] | None) -> bool:
    """Whether most of a run's update is lost at the evaluation dtype (``eval_precision`` of run_summary.json).

    A base exact in the dtype (Qwen3's bf16 checkpoint): less than half of the update survives the cast. A base that
    is not (an fp32 checkpoint), whose own rounding inflates the survival share far above 1 for tiny updates: the
    cast changes the update by more than half its size (``rounding_error``)."""
    if not precision:
        return False
    if precision.get("base_exact", True) is False:
        error: Any = precision.get("rounding_error")
        return _finite(error) and float(error) > ROUNDS_AWAY_BELOW
    overall: Any = precision.get("overall")
    return _finite(overall) and float(overall) < ROUNDS_AWAY_BELOW


def _rounds_away(m: MethodResult) -> bool:
    exact_share_low = m.update_rounding_error is None and _finite(m.update_survival)
    return m.update_lost or (exact_share_low and (m.update_survival or 0.0) < ROUNDS_AWAY_BELOW)


def _rounding_sentence(m: MethodResult) -> str:
    dtype = m.eval_dtype or "the evaluation dtype"
    if m.update_rounding_error is not None:  # a base not exact in the dtype: the share counts rounding noise
        return (f"{m.name}'s fine-tuning update is mostly lost at {dtype}: the cast changes it by "
                f"{_percent(m.update_rounding_error)} of its size, so its accuracy shows less than it trained.")
    return (f"{m.name}'s fine-tuning update mostly rounds away at {dtype}: only {_percent(m.update_survival or 0.0)} "
            "of it survives the cast to the evaluation dtype, so its accuracy shows less than it trained.")


def findings(methods: Sequence[MethodResult], comparisons: Sequence[Comparison] = ()) -> list[str]:
    """The Findings sentences, in order: validation loss, peak memory, time per epoch, accuracies, paired
    comparisons, updates that round away at the evaluation dtype, then runs that diverged or were interrupted. An
    empty list when nothing is supported."""
    sentences: list[str] = []
    for sentence in (_loss_sentence(methods), *_memory_sentences(methods), *_time_sentences(methods),
                     _accuracy_sentence(methods)):
        if sentence:
            sentences.append(sentence)
    sentences.extend(_comparison_sentence(c) for c in comparisons)
    sentences.extend(_rounding_sentence(m) for m in methods if _rounds_away(m))
    sentences.extend(_incomplete_sentence(m) for m in methods if not m.completed)
    return sentences


# --- formatting -----------------------------------------------------------------------------------------------------


def _loss(value: float) -> str:
    return f"{value:.3f}"


def _loss_at(m: MethodResult, loss: float) -> str:
    if m.seeds > 1:
        return f"{_loss(loss)} (mean over {m.seeds} seeds)"
    step = "" if m.lowest_val_loss_step is None else f" at step {m.lowest_val_loss_step}"
    return f"{_loss(loss)}{step}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _signed(points: float) -> str:
    rounded = round(points, 1)
    return "0.0" if rounded == 0 else f"{rounded:+.1f}"


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --- sentences ------------------------------------------------------------------------------------------------------


def _loss_sentence(methods: Sequence[MethodResult]) -> str | None:
    ranked = sorted(
        ((m, m.lowest_val_loss) for m in methods
         if m.completed and m.lowest_val_loss is not None and math.isfinite(m.lowest_val_loss)),
        key=lambda item: item[1],
    )  # fmt: skip
    if not ranked:
        return None
    if len(ranked) == 1:
        return f"{ranked[0][0].name}'s lowest validation loss was {_loss_at(*ranked[0])}."
    # Runs equal to the quoted precision tie: naming one of them "lowest" would claim what the numbers cannot show.
    best = [item for item in ranked if _loss(item[1]) == _loss(ranked[0][1])]
    rest = ranked[len(best):]
    if len(best) == 1:
        head = f"{best[0][0].name} reached the lowest validation loss, {_loss_at(*best[0])}"
    else:
        head = (f"{_names([m.name for m, _ in best])} tie for the lowest validation loss, "
                + "; ".join(f"{m.name} {_loss_at(m, loss)}" for m, loss in best))
    tail = f" (then {'; '.join(f'{m.name} {_loss_at(m, loss)}' for m, loss in rest)})" if rest else ""
    return head + tail + "."


def _memory_group(kind: str | None) -> str | None:
    if kind is None:
        return None
    if kind == "cuda":
        return "cuda"
    return "cpu" if kind.startswith("cpu") else None


def _relative_list(items: list[tuple[str, float]], fmt: Callable[[float], str], most: str) -> str:
    """``a 7.40 GiB (the most), b 5.25 GiB (71% of a), ...`` from (name, value) pairs sorted high to low."""
    top_name, top_value = items[0]
    parts = [f"{top_name} {fmt(top_value)} ({most})"]
    parts += [f"{name} {fmt(value)} ({100 * value / top_value:.0f}% of {top_name})" for name, value in items[1:]]
    return ", ".join(parts)


def _memory_sentences(methods: Sequence[MethodResult]) -> list[str]:
    sentences = []
    labels = {
        "cuda": "Peak GPU memory",
        "cpu": "Peak process RSS (CPU runs: the whole training process, not GPU memory)",
    }
    for group, label in labels.items():
        items = sorted(
            ((m.name, m.peak_memory_gib) for m in methods
             if m.completed and m.peak_memory_gib is not None and m.peak_memory_gib > 0
             and _memory_group(m.memory_kind) == group),
            key=lambda item: -item[1],
        )  # fmt: skip
        if len(items) >= 2:
            sentences.append(f"{label}: {_relative_list(items, lambda v: f'{v:.2f} GiB', 'the most')}.")
    return sentences


def _time_sentences(methods: Sequence[MethodResult]) -> list[str]:
    devices: dict[str | None, list[tuple[str, float]]] = {}
    for m in methods:
        if m.completed and m.seconds_per_epoch is not None and m.seconds_per_epoch > 0:
            devices.setdefault(m.timing_device, []).append((m.name, m.seconds_per_epoch))
    labels = {"cpu": "Time per epoch (on CPU, indicative)", "cuda": "Time per epoch (on GPU)"}
    sentences = []
    for device, items in devices.items():
        if len(items) < 2:
            continue
        items.sort(key=lambda item: -item[1])
        label = labels.get(device or "", "Time per epoch")
        sentences.append(f"{label}: {_relative_list(items, _duration, 'the longest')}.")
    return sentences


def _accuracy_sentence(methods: Sequence[MethodResult]) -> str | None:
    scored = sorted(((m, m.accuracy) for m in methods if m.accuracy is not None), key=lambda item: -item[1])
    if not scored:
        return None

    def text(m: MethodResult, accuracy: float) -> str:
        if m.accuracy_ci95 is None:
            return f"{m.name} {_percent(accuracy)}"
        low, high = m.accuracy_ci95
        return f"{m.name} {_percent(accuracy)} (95% CI {_percent(low)} to {_percent(high)})"

    return "Accuracy: " + ", ".join(text(m, accuracy) for m, accuracy in scored) + "."


def _verdict(r: PairedComparison) -> str:
    test = "McNemar" if r.binary else "sign test"
    if r.significant:
        return "significant at the 5% level"
    if r.p_value < 0.05:  # the test rejects but the interval contains 0: borderline, so not claimed
        return f"not significant at the 5% level ({test} p < 0.05, but the interval contains 0)"
    if not r.interval_contains_zero:
        return f"not significant at the 5% level (the interval excludes 0, but {test} p >= 0.05)"
    return "not significant at the 5% level (the interval contains 0)"


def _comparison_sentence(c: Comparison) -> str:
    r = c.result
    low, high = r.ci95_points
    if r.binary:
        counts = f"McNemar {_p(r.p_value)}; {r.only_a} {c.unit} solved only by {c.a}, {r.only_b} only by {c.b}"
    else:
        counts = (f"exact sign test {_p(r.p_value)}; {r.only_a} {c.unit} scored higher by {c.a}, "
                  f"{r.only_b} by {c.b}")
    return (f"{c.a} vs {c.b}: {_signed(r.difference_points)} points (95% CI {_signed(low)} to {_signed(high)}; "
            f"{counts}): {_verdict(r)}.")


def _incomplete_sentence(m: MethodResult) -> str:
    diverged = "diverged (non-finite loss)" + ("" if m.diverged_step is None else f" at step {m.diverged_step}")
    if m.diverged and m.interrupted:
        what = f"{diverged} and was interrupted"
    elif m.diverged:
        what = diverged
    else:
        what = "was interrupted before it finished"
    return f"{m.name} {what}; its loss, memory and time are left out of the comparisons above."
