"""The `math_boxed_accuracy` evaluate metric loads from its local folder without network and wraps the grader."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

METRIC_DIR = Path(__file__).resolve().parents[1] / "metrics" / "math_boxed_accuracy"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")

    # Any network access would be a bug: loading a local script must not need it.
    def no_network(*args, **kwargs):
        raise AssertionError("network access while loading/computing the metric")

    monkeypatch.setattr(socket.socket, "connect", no_network)


def test_metric_loads_offline_and_computes(offline: None) -> None:
    import evaluate

    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    assert type(metric).__name__ == "MathBoxedAccuracy"
    result = metric.compute(
        predictions=[
            "So $x = \\boxed{\\dfrac{1}{2}}$.",
            "I think it is 3.",
            "\\boxed{3} ... wait ... \\boxed{4}",
            "$\\boxed{4}$",
            "$\\boxed{5^{5^{5^{5^5}}}}$",
        ],
        references=["0.5", "3", "4", "4\\sqrt{2}", "5"],
        timeout_s=3.0,
        num_workers=2,
    )
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert (result["num_samples"], result["correct"], result["no_box"], result["error"]) == (5, 2, 1, 0)
    # The power tower is killed at the time limit (status "timeout"); either way it is wrong.
    assert result["incorrect"] + result["timeout"] == 2
    assert set(result) == {"accuracy", "num_samples", "correct", "incorrect", "no_box", "timeout", "error"}


def test_metric_add_batch_and_empty(offline: None) -> None:
    import evaluate

    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    metric.add_batch(predictions=["\\boxed{(1,2]}"], references=["(1, 2]"])
    metric.add(predictions="\\boxed{\\text{(C)}}", references="C")
    assert metric.compute()["accuracy"] == 1.0
    assert metric.compute(predictions=[], references=[])["num_samples"] == 0
