"""Step timing shared by the course loop and the project path: tokens/s over the timed steps, median and max step."""

from __future__ import annotations

import statistics
from typing import Any


def timing_summary(ends: list[float], begins: list[float], tokens_per_step: list[int], warmup: int) -> dict[str, Any]:
    """Tokens/s over the timed steps: from the end of the last warm-up step to the end of the last step.

    ``ends[i]`` / ``begins[i]`` are synchronised clock readings at the end / start of optimizer step ``i``; step
    times are end-to-end intervals (data loading included), ``compute_s`` sums begin-to-end intervals only.
    """
    if warmup < 1 or len(ends) <= warmup:
        raise ValueError(f"need at least one warm-up and one timed step, got {len(ends)} steps and warmup={warmup}")
    wall = ends[-1] - ends[warmup - 1]
    tokens = sum(tokens_per_step[warmup:])
    step_times = [e - s for s, e in zip(ends[warmup - 1 : -1], ends[warmup:], strict=True)]
    timed = len(ends) - warmup
    return {
        "steps_timed": timed,
        "wall_s": round(wall, 3),
        "tokens": tokens,
        "tokens_per_step": round(tokens / timed, 1),
        "tokens_per_s": round(tokens / wall, 1) if wall > 0 else None,
        "step_s_median": round(statistics.median(step_times), 4),
        "step_s_max": round(max(step_times), 4),
        "compute_s": round(sum(e - b for b, e in zip(begins[warmup:], ends[warmup:], strict=True)), 3),
    }
