"""bench/train_throughput.py on CPU with the tiny smoke model: it runs end to end and its JSON and Markdown carry
every field. No timing assertions: CPU numbers mean nothing for the GPU comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMOKE_DATA, run_cli

pytestmark = pytest.mark.slow  # the whole bench end to end

RESULT_KEYS = {
    "setup",
    "method",
    "status",
    "error",
    "tokens",
    "tokens_per_s",
    "tokens_per_step",
    "wall_s",
    "steps_timed",
    "speedup_vs_course",
    "mfu",
    "flops_per_token",
    "peak_allocated_gib",
    "peak_reserved_gib",
    "peak_rss_gib",
    "micro_batch",
    "grad_accum",
    "max_length",
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-train")
    result = run_cli(
        "bench/train_throughput.py",
        "--device", "cpu",
        "--tiny",
        "--steps", "2",
        "--warmup_steps", "1",
        "--methods", "adamw,lora",
        "--setups", "course,fast",
        "--data_dir", str(SMOKE_DATA),  # the committed sample problems: the same on every machine
        "--output_dir", str(out),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((Path(out) / "train_throughput.json").read_text())
    markdown = (Path(out) / "train_throughput.md").read_text()
    assert markdown.strip() in result.stdout  # the table is printed at the end too
    return data, markdown


def test_json_has_every_configuration_and_field(bench):
    data, _ = bench
    assert data["device"] == "cpu"
    assert data["matmul_peak_tflops"] is None  # no matmul peak on CPU, hence no MFU
    assert {"device_name", "date", "torch", "transformers", "trl"} <= data["environment"].keys()
    params = data["model"]["parameters"]
    assert params["N"] == params["embedding"] + params["non_embedding"] > 0
    assert [(r["setup"], r["method"]) for r in data["results"]] == [
        ("course", "adamw"),
        ("course", "lora"),
        ("fast", "adamw"),
        ("fast", "lora"),
    ]
    for r in data["results"]:
        assert r["status"] == "ok", r.get("traceback")
        assert RESULT_KEYS <= r.keys()
        assert r["steps_timed"] == 2
        assert r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["wall_s"] > 0
        assert r["mfu"] is None
        assert r["peak_allocated_gib"] is None and r["peak_rss_gib"] > 0  # CPU: process peak RSS instead of CUDA
        assert r["flops_per_token"] == (4 if r["method"] == "lora" else 6) * params["N"]
        assert r["speedup_vs_course"] is not None
    course = {r["method"]: r for r in data["results"] if r["setup"] == "course"}
    assert all(r["speedup_vs_course"] == 1.0 for r in course.values())
    assert all((r["micro_batch"], r["grad_accum"], r["max_length"]) == (2, 4, 512) for r in course.values())
    fast = [r for r in data["results"] if r["setup"] == "fast"]
    for r in fast:
        assert r["recipe"] == f"recipes/qwen3-0.6b-base/{r['method']}.yaml"
        assert (r["micro_batch"], r["grad_accum"], r["max_length"], r["packing"]) == (8, 2, 1024, True)
        # Main-process count vs the project's TokenCounter (in-process on CPU): equal up to one prefetched batch.
        assert r["token_counter_tokens"] == pytest.approx(r["tokens"], rel=0.25)
    assert data["data_cache_hits"] >= 2  # the second recipe reused the first one's prepared and tokenised data


def test_markdown_table(bench):
    data, markdown = bench
    lines = markdown.splitlines()
    assert lines[0] == "# Training throughput"
    header = next(i for i, line in enumerate(lines) if line.startswith("| setup | method | tokens/s"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    assert columns[:5] == ["setup", "method", "tokens/s", "speedup vs course", "MFU"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2 :] if line.startswith("|")]
    assert len(rows) == len(data["results"])
    for row, r in zip(rows, data["results"], strict=True):
        assert len(row) == len(columns)
        assert row[:2] == [r["setup"], r["method"]]
        assert row[2] == f"{r['tokens_per_s']:,.0f}"
        assert row[3] == f"{r['speedup_vs_course']:.2f}x"
        assert row[4] == "-"  # no MFU on CPU


def test_a_failing_configuration_is_recorded_and_the_bench_goes_on(tmp_path):
    # max_length 8 drops every example in the project path only: its configuration fails, the course loop runs.
    result = run_cli(
        "bench/train_throughput.py",
        "--device", "cpu",
        "--tiny",
        "--steps", "1",
        "--warmup_steps", "1",
        "--methods", "sgd",
        "--setups", "course,fast",
        "--data_dir", str(SMOKE_DATA),
        "--recipe_overrides", "--max_length 8",
        "--output_dir", str(tmp_path),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "train_throughput.json").read_text())
    course, fast = data["results"]
    assert course["status"] == "ok" and course["tokens_per_s"] > 0
    assert fast["status"] == "error" and "max_length=8" in fast["error"] and fast["traceback"]
    assert fast["speedup_vs_course"] is None and fast["mfu"] is None
    markdown = (tmp_path / "train_throughput.md").read_text()
    assert "| fast | sgd | failed: UserError: no training examples left" in markdown
