"""Generation backends on the tiny smoke model (CPU, fp32): stop tokens, backends agreeing, seeding, loading."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SMOKE_MODEL, run_cli
from mathsft import generation as gen
from mathsft.errors import UserError
from mathsft.template import END_OF_TEXT, END_OF_TURN, render_generation_prompt

PROBLEMS = [f"What is {i}+{7 * i}? " * (1 + i % 3) for i in range(6)]


@pytest.fixture(scope="module")
def smoke():
    return gen.load_model_and_tokenizer(str(SMOKE_MODEL))


@pytest.fixture(scope="module")
def lively(smoke):
    """The smoke model with large random weights (it then writes varied text), and <|im_end|> made likely enough
    that some sequences stop early and others run to the token limit."""
    model, tokenizer = gen.load_model_and_tokenizer(str(SMOKE_MODEL))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(END_OF_TURN)] *= 3  # tied lm_head
    return model, tokenizer


def _requests(tokenizer, samples: int = 1) -> list[gen.GenerationRequest]:
    return [
        gen.GenerationRequest(
            key=(i, s), prompt_ids=gen.encode_prompt(tokenizer, render_generation_prompt(tokenizer, p))
        )
        for i, p in enumerate(PROBLEMS)
        for s in range(samples)
    ]


def _run(model, tokenizer, requests, settings, backend, batch_size=None, attn=None) -> dict:
    results = {}
    for batch in gen.generate(
        model, tokenizer, requests, settings, backend, batch_size, False, attn_implementation=attn
    ):
        results.update(batch)
    assert len(results) == len(requests)
    return results


def test_stop_tokens_come_from_the_template(smoke):
    _, tokenizer = smoke
    vocab = tokenizer.get_vocab()
    assert gen.stop_token_ids(tokenizer) == [vocab[END_OF_TURN], vocab[END_OF_TEXT]]
    assert tokenizer.padding_side == "left"


def test_finish_cuts_at_the_first_stop_token(smoke):
    _, tokenizer = smoke
    stops = set(gen.stop_token_ids(tokenizer))
    body = tokenizer("x = 12", add_special_tokens=False)["input_ids"]
    end, eot = gen.stop_token_ids(tokenizer)
    stopped = gen._finish(tokenizer, [*body, end, eot, eot], stops, ignore_eos=False)
    assert (stopped.text, stopped.finish_reason, stopped.num_tokens) == ("x = 12", "stop", len(body) + 1)
    cut = gen._finish(tokenizer, body, stops, ignore_eos=False)
    assert (cut.text, cut.finish_reason, cut.num_tokens) == ("x = 12", "length", len(body))
    forced = gen._finish(tokenizer, [*body, end], stops, ignore_eos=True)
    assert (forced.finish_reason, forced.num_tokens) == ("length", len(body) + 1)


def test_greedy_backends_agree(lively):
    """hf, paged (SDPA) and paged with the varlen flash attention (its CPU reference here) give identical text."""
    model, tokenizer = lively
    requests = _requests(tokenizer)
    settings = gen.SamplingSettings(max_new_tokens=24)
    hf = _run(model, tokenizer, requests, settings, "hf", batch_size=4)
    reasons = {c.finish_reason for c in hf.values()}
    assert reasons == {"stop", "length"}, "the fixture should give both early stops and truncations"
    for c in hf.values():
        assert (c.num_tokens < 24) == (c.finish_reason == "stop")
        assert END_OF_TURN not in c.text
    for attn in (None, gen.TORCH_FLASH_VARLEN):
        paged = _run(model, tokenizer, requests, settings, "paged", attn=attn)
        assert paged == hf, f"paged ({attn or 'sdpa'}) differs from hf"
    assert model.config._attn_implementation == "sdpa", "the paged backend must restore the attention implementation"


def test_batch_size_does_not_change_greedy_output(lively):
    model, tokenizer = lively
    requests = _requests(tokenizer)
    settings = gen.SamplingSettings(max_new_tokens=12)
    assert _run(model, tokenizer, requests, settings, "hf", 1) == _run(model, tokenizer, requests, settings, "hf", 6)


def test_sampling_is_seeded(lively):
    model, tokenizer = lively
    requests = _requests(tokenizer, samples=2)
    settings = gen.SamplingSettings(max_new_tokens=12, temperature=0.7, top_p=0.95, seed=1)
    first = _run(model, tokenizer, requests, settings, "hf", 4)
    assert first == _run(model, tokenizer, requests, settings, "hf", 4)
    other_seed = _run(model, tokenizer, requests, gen.SamplingSettings(12, 0.7, 0.95, seed=2), "hf", 4)
    assert other_seed != first
    assert any(first[(i, 0)].text != first[(i, 1)].text for i in range(len(PROBLEMS))), "samples should differ"


def test_paged_sampling_runs(lively):
    model, tokenizer = lively
    requests = _requests(tokenizer, samples=2)
    results = _run(model, tokenizer, requests, gen.SamplingSettings(8, 0.7, 1.0), "paged")
    assert all(1 <= c.num_tokens <= 8 for c in results.values())


def test_ignore_eos_forces_full_length(lively):
    model, tokenizer = lively
    settings = gen.SamplingSettings(max_new_tokens=10, ignore_eos=True)
    for backend in ("hf", "paged"):
        results = _run(model, tokenizer, _requests(tokenizer), settings, backend)
        assert {(c.finish_reason, c.num_tokens) for c in results.values()} == {("length", 10)}


def test_varlen_reference_matches_causal_sdpa():
    """One sequence, prefill then a 1-token decode step against its cache (bottom-right causal alignment)."""
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 4, 8), torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    full = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, enable_gqa=True
    ).transpose(0, 1)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    torch.testing.assert_close(gen._varlen_reference(q, k, v, cu, cu, None), full)
    last = gen._varlen_reference(q[4:], k, v, torch.tensor([0, 1], dtype=torch.int32), cu, None)
    torch.testing.assert_close(last, full[4:])


def test_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert gen.resolve_backend("auto", cpu) == "hf"
    assert gen.resolve_dtype("auto", cpu) == torch.float32
    with pytest.raises(UserError, match="unknown backend"):
        gen.resolve_backend("vllm", cpu)


def test_lora_adapter_is_merged(tmp_path, smoke):
    """An adapter folder (with its own tokenizer) loads merged: same logits as the unmerged PEFT model."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(SMOKE_MODEL, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    smoke[1].save_pretrained(tmp_path / "adapter")

    merged, tokenizer = gen.load_model_and_tokenizer(str(SMOKE_MODEL), adapter=str(tmp_path / "adapter"))
    assert not isinstance(merged, PeftModel)
    ids = torch.tensor([gen.encode_prompt(tokenizer, render_generation_prompt(tokenizer, "1+1"))])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(ids).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, smoke[0](ids).logits), "the adapter should change the model"


def test_loading_errors(tmp_path):
    with pytest.raises(UserError, match="model path not found: ./no/such/model"):
        gen.load_model_and_tokenizer("./no/such/model")
    with pytest.raises(UserError, match="has no adapter_config.json"):
        gen.load_model_and_tokenizer(str(SMOKE_MODEL), adapter=str(tmp_path))


@pytest.mark.slow
def test_throughput_bench_runs_on_cpu(tmp_path):
    result = run_cli(
        "bench/generate_throughput.py", "--device", "cpu", "--tiny", "--num_prompts", "8", "--max_new_tokens", "8",
        "--variants", "auto", "paged", "--output_dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "generate_throughput.json").read_text())
    assert {"date", "device_name", "torch", "transformers"} <= data["environment"].keys()
    assert data["setup"]["num_prompts"] == 8 and data["setup"]["max_new_tokens"] == 8
    assert [run["backend"] for run in data["project"]] == ["hf", "paged"]
    for run in data["project"]:
        assert run["generated_tokens"] == 64 and run["all_full_length"]
        for key in ("wall_s_cold", "wall_s_warm", "tokens_per_s_warm", "speedup_warm"):
            assert run[key] > 0
    assert data["baseline"]["batch_size"] == 4 and data["baseline"]["wall_s"] > 0
    markdown = (tmp_path / "generate_throughput.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 + 1  # header, separator, two project paths, the course loop
    assert all(line.count("|") == 6 for line in table)
    assert "course loop" in markdown and "speedup" in markdown
