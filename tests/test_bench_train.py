"""bench/train_throughput.py: where it writes, the private hooks it checks, its configurations, and (slow) a CPU run
with the tiny smoke model whose JSON and Markdown carry every field. No timing assertions: CPU numbers mean nothing
for the GPU comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from trl import SFTTrainer

from bench import common, train_throughput
from bench.data_cache import DataCache
from bench.hooks import require_data_cache_hooks
from bench.switches import Configuration, expand_configurations, plan_runs
from bench.timing import timing_summary
from bench.train_report import LOSS_EQUAL_RTOL, loss_comparison
from conftest import SMOKE_DATA, run_cli
from mathsft import kernels, training
from mathsft.errors import UserError

CPU = torch.device("cpu")
RESULT_FILES = ("train_throughput.json", "train_throughput.md")

# ---- where results go ----------------------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path, monkeypatch) -> tuple[Path, Path]:
    scratch, committed = tmp_path / "runs" / "bench", tmp_path / "bench" / "results"
    monkeypatch.setattr(common, "SCRATCH_ROOT", scratch)
    monkeypatch.setattr(common, "COMMITTED_ROOT", committed)
    return scratch, committed


def test_default_output_is_a_new_scratch_folder_named_by_device_and_date(roots):
    scratch, committed = roots
    first = common.resolve_output_dir(None, CPU, "cpu (x86_64, 2 cores)", RESULT_FILES)
    assert first == scratch / f"cpu-x86-64-2-cores_{common.utc_date()}" and first.is_dir()
    (first / "train_throughput.json").write_text("{}")
    second = common.resolve_output_dir(None, CPU, "cpu (x86_64, 2 cores)", RESULT_FILES)
    assert second == scratch / f"cpu-x86-64-2-cores_{common.utc_date()}-2"  # never over an earlier run
    assert not committed.exists()


def test_committed_results_are_refused_off_the_gpu_and_never_overwritten(roots):
    _, committed = roots
    with pytest.raises(UserError, match="committed results"):
        common.resolve_output_dir(str(committed), torch.device("cuda"), "NVIDIA H200", RESULT_FILES)
    with pytest.raises(UserError, match="GPU measurements"):
        common.resolve_output_dir(str(committed / "cpu_2026-01-01"), CPU, "cpu", RESULT_FILES)
    run = committed / "nvidia-h200_2026-01-01"
    # A GPU run may create a new folder there (no CUDA needed to resolve the path) ...
    assert common.resolve_output_dir(str(run), torch.device("cuda"), "NVIDIA H200", RESULT_FILES) == run.resolve()
    (run / "train_throughput.md").write_text("old")
    with pytest.raises(UserError, match="already holds train_throughput.md"):  # ... but never over a finished one
        common.resolve_output_dir(str(run), torch.device("cuda"), "NVIDIA H200", RESULT_FILES)
    assert (run / "train_throughput.md").read_text() == "old"


def test_device_slug():
    assert common.device_slug("NVIDIA H200") == "nvidia-h200"
    assert common.device_slug("cpu (x86_64, 2 cores)") == "cpu-x86-64-2-cores"


def test_the_bench_refuses_bench_results_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_throughput.main(
            ["--device", "cpu", "--tiny", "--configs", "course/sgd", "--output_dir", str(common.COMMITTED_ROOT)]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "holds the committed results" in err and "\n" not in err


# ---- the private hooks it patches ----------------------------------------------------------------------------------


def test_missing_trl_hook_fails_with_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delattr(SFTTrainer, "_prepare_dataset")
    with pytest.raises(UserError, match=r"SFTTrainer\._prepare_dataset, which this version no longer has.*cache_data"):
        require_data_cache_hooks()
    # Through the command line: exit 2 and one line before any training starts.
    argv = ["--device", "cpu", "--tiny", "--configs", "fast/sgd", "--data_dir", str(SMOKE_DATA),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        train_throughput.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the bench patches SFTTrainer._prepare_dataset")
    assert not (tmp_path / "out" / "train_throughput.json").exists()  # refused before any configuration ran


def test_changed_trl_hook_signature_is_refused(monkeypatch):
    monkeypatch.setattr(SFTTrainer, "_prepare_dataset", lambda self, dataset, args: dataset)
    with pytest.raises(UserError, match=r"takes \(self, dataset, args\)"):
        require_data_cache_hooks()


def test_data_cache_restores_what_it_patched():
    prepare, tokenize = training.prepare_datasets, SFTTrainer._prepare_dataset
    with DataCache():
        assert training.prepare_datasets is not prepare and SFTTrainer._prepare_dataset is not tokenize
        require_data_cache_hooks()  # the wrappers keep the checked signatures
    assert training.prepare_datasets is prepare and SFTTrainer._prepare_dataset is tokenize


# ---- configurations ------------------------------------------------------------------------------------------------


def test_configurations_expand_in_order_and_switches_keep_to_their_methods():
    planned = expand_configurations(["fast", "fast+bf16base+nodropout", "lean+mb4/adamw"], ["adamw", "lora"])
    assert [(c.label, c.method) for c in planned] == [
        ("fast", "adamw"), ("fast", "lora"), ("fast+bf16base+nodropout", "lora"), ("lean+mb4", "adamw"),
    ]  # fmt: skip
    assert planned[2].overrides() == ["--dtype", "bfloat16", "--lora_dropout", "0"]
    assert not planned[2].equal_by_design and planned[3].equal_by_design


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fast+varlem", "unknown switch 'varlem' (did you mean 'varlen'?)"),
        ("fats", "unknown setup 'fats' (did you mean 'fast'?)"),
        ("fast+bf16base/adamw", "does not apply to method 'adamw'"),
        ("fast+mb4", "switch 'mb4' applies to lean"),
        ("course+varlen", "switch 'varlen' applies to fast, lean"),
        ("fast/adamx", "unknown method 'adamx'"),
    ],
)
def test_bad_configurations_are_one_line(spec, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand_configurations([spec], ["adamw", "sgd", "lora"])


def test_plan_skips_what_cannot_run_here_and_pairs_the_reference():
    runs = plan_runs(expand_configurations(["fast", "fast+liger", "fast+varlen"], ["sgd"]), CPU)
    plain, liger, varlen = runs
    assert plain.reference is None and varlen.reference == Configuration("fast", (), "sgd")
    expected = "liger-kernel is not installed" if not kernels.liger_kernel_available() else "need a CUDA GPU"
    assert expected in (liger.skip_reason or "") and varlen.skip_reason is None


# ---- figures -------------------------------------------------------------------------------------------------------


def test_timing_summary_counts_only_the_timed_steps():
    ends, begins = [1.0, 2.0, 4.0, 5.0], [0.0, 1.5, 2.5, 4.5]
    summary = timing_summary(ends, begins, [100, 10, 20, 30], warmup=1)
    assert summary["steps_timed"] == 3 and summary["tokens"] == 60 and summary["wall_s"] == 4.0
    assert summary["tokens_per_s"] == 15.0 and summary["step_s_median"] == 1.0 and summary["step_s_max"] == 2.0
    assert summary["compute_s"] == pytest.approx(0.5 + 1.5 + 0.5)
    with pytest.raises(ValueError, match="at least one warm-up and one timed step"):
        timing_summary([1.0], [0.0], [5], warmup=1)


def test_loss_comparison():
    same = loss_comparison([10.0, 9.0], [10.0, 9.0])
    assert same["loss_max_abs_diff"] == 0 and same["loss_equal"]
    off = loss_comparison([10.0, 9.1], [10.0, 9.0, 8.0])
    assert off["loss_steps_compared"] == 2 and off["loss_max_abs_diff"] == pytest.approx(0.1)
    assert off["loss_max_rel_diff"] == pytest.approx(0.1 / 9.0) and not off["loss_equal"]
    assert loss_comparison([10.0 * (1 + LOSS_EQUAL_RTOL / 2)], [10.0])["loss_equal"]


# ---- a CPU run, end to end (slow) ----------------------------------------------------------------------------------

pytestmark = pytest.mark.slow  # the whole bench end to end

RESULT_KEYS = {
    "configuration", "setup", "switches", "method", "reference", "status", "error", "tokens", "tokens_per_s",
    "tokens_per_step", "wall_s", "steps_timed", "step_s_median", "step_s_max", "speedup_vs_course", "mfu",
    "flops_per_token", "peak_allocated_gib", "peak_reserved_gib", "peak_rss_gib", "micro_batch", "grad_accum",
    "max_length", "step_losses", "last_loss",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-train") / "out"
    result = run_cli(
        "bench/train_throughput.py",
        "--device", "cpu",
        "--tiny",
        "--steps", "2",
        "--warmup_steps", "1",
        "--methods", "adamw,lora",
        "--configs", "course", "fast", "fast+varlen/adamw", "fast+liger/adamw", "lean/adamw", "lean+mb4/adamw",
        "--recipe_overrides", "--max_length 256",  # short rows: the tiny model's examples are ~100 tokens
        "--data_dir", str(SMOKE_DATA),  # the committed sample problems: the same on every machine
        "--output_dir", str(out),
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "train_throughput.json").read_text())
    markdown = (out / "train_throughput.md").read_text()
    assert markdown.strip() in result.stdout  # the table is printed at the end too
    return data, markdown


@pytest.mark.slow
def test_json_has_every_configuration_and_field(bench):
    data, _ = bench
    assert data["device"] == "cpu" and data["matmul_peak_tflops"] is None  # no matmul peak on CPU, hence no MFU
    assert {"device_name", "date", "torch", "transformers", "trl"} <= data["environment"].keys()
    params = data["model"]["parameters"]
    assert params["N"] == params["embedding"] + params["non_embedding"] > 0
    assert [(r["configuration"], r["method"]) for r in data["results"]] == [
        ("course", "adamw"), ("course", "lora"), ("fast", "adamw"), ("fast", "lora"), ("fast+varlen", "adamw"),
        ("fast+liger", "adamw"), ("lean", "adamw"), ("lean+mb4", "adamw"),
    ]  # fmt: skip
    ran = [r for r in data["results"] if r["configuration"] != "fast+liger"]
    for r in ran:
        assert r["status"] == "ok", r.get("traceback")
        assert RESULT_KEYS <= r.keys()
        assert r["steps_timed"] == 2 and len(r["step_losses"]) == 3
        assert r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["wall_s"] > 0 and r["mfu"] is None
        assert r["peak_allocated_gib"] is None and r["peak_rss_gib"] > 0  # CPU: process peak RSS instead of CUDA
        assert r["flops_per_token"] == (4 if r["method"] == "lora" else 6) * params["N"]
        assert r["speedup_vs_course"] is not None
    course = {r["method"]: r for r in ran if r["setup"] == "course"}
    assert all(r["speedup_vs_course"] == 1.0 for r in course.values())
    assert all((r["micro_batch"], r["grad_accum"], r["max_length"]) == (2, 4, 512) for r in course.values())
    assert course["adamw"]["optimizer"] == "AdamW" and course["adamw"]["learning_rate"] == 1e-5  # the registry's
    liger = data["results"][5]
    assert liger["status"] == "skipped" and liger["skip_reason"]
    assert data["data_cache_hits"] >= 2  # later recipes reused the first one's prepared and tokenised data


@pytest.mark.slow
def test_recipes_and_switches_reach_the_trainer(bench):
    data, _ = bench
    rows = {(r["configuration"], r["method"]): r for r in data["results"]}
    fast, varlen = rows["fast", "adamw"], rows["fast+varlen", "adamw"]
    assert fast["recipe"] == "recipes/qwen3-0.6b-base/adamw.yaml"
    assert (fast["micro_batch"], fast["grad_accum"], fast["max_length"], fast["packing"]) == (8, 2, 256, True)
    assert (fast["attn_implementation"], fast["collator"]) == ("sdpa", "PackedRowsCollator")
    assert (varlen["attn_implementation"], varlen["collator"]) == (
        kernels.PACKED_FLASH_VARLEN, "DataCollatorForLanguageModeling"
    )  # TRL's padding-free rows
    lean, mb4 = rows["lean", "adamw"], rows["lean+mb4", "adamw"]
    assert (lean["micro_batch"], lean["grad_accum"], mb4["micro_batch"], mb4["grad_accum"]) == (2, 8, 4, 4)
    assert lean["checkpointing_active"] and mb4["checkpointing_active"]
    # The same steps over the same rows: the project's TokenCounter counts the same tokens whatever the collator,
    # and the switches that should not change the arithmetic do not (fp32 on CPU: rounding only).
    assert varlen["tokens"] == fast["tokens"] and mb4["tokens"] == lean["tokens"]
    for switched in (varlen, mb4):
        assert switched["reference"] == switched["setup"] and switched["loss_steps_compared"] == 3
        assert switched["loss_equal"] and switched["loss_max_rel_diff"] < 1e-5
    assert fast.get("loss_max_abs_diff") is None  # the plain recipe is the reference, not compared


@pytest.mark.slow
def test_markdown_table(bench):
    data, markdown = bench
    lines = markdown.splitlines()
    assert lines[0] == "# Training throughput"
    header = next(i for i, line in enumerate(lines) if line.startswith("| configuration | method | tokens/s"))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    assert columns[:5] == ["configuration", "method", "tokens/s", "speedup vs course", "MFU"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2 :] if line.startswith("|")]
    assert len(rows) == len(data["results"])
    for row, r in zip(rows, data["results"], strict=True):
        assert len(row) == len(columns)
        assert row[:2] == [r["configuration"], r["method"]]
        if r["status"] == "skipped":
            assert row[2] == f"skipped: {r['skip_reason']}"
            continue
        assert row[2] == f"{r['tokens_per_s']:,.0f}"
        assert row[3] == f"{r['speedup_vs_course']:.2f}x"
        assert row[4] == "-"  # no MFU on CPU
        assert row[5] == f"{r['step_s_median']:.3f} / {r['step_s_max']:.3f}"
        assert row[8] == ("-" if r.get("loss_max_rel_diff") is None else f"{r['loss_max_rel_diff']:.1e} (equal)")
    assert "- +varlen: " in markdown and "- +mb4: " in markdown


@pytest.mark.slow
def test_a_failing_configuration_is_recorded_and_the_bench_goes_on(tmp_path):
    # max_length 20 cannot hold the chat scaffold in the project path only: its configuration fails, the course
    # loop runs.
    result = run_cli(
        "bench/train_throughput.py",
        "--device", "cpu",
        "--tiny",
        "--steps", "1",
        "--warmup_steps", "1",
        "--methods", "sgd",
        "--configs", "course", "fast",
        "--data_dir", str(SMOKE_DATA),
        "--recipe_overrides", "--max_length 20",
        "--output_dir", str(tmp_path / "out"),
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "train_throughput.json").read_text())
    course, fast = data["results"]
    assert course["status"] == "ok" and course["tokens_per_s"] > 0
    assert fast["status"] == "error" and "max_length 20 cannot hold" in fast["error"] and fast["traceback"]
    assert fast["speedup_vs_course"] is None and fast["mfu"] is None
    markdown = (tmp_path / "out" / "train_throughput.md").read_text()
    assert "| fast | sgd | failed: UserError: max_length 20 cannot hold" in markdown
