"""An unreachable Hugging Face Hub: detected by one short probe, switched to offline mode, so a Hub id fails in
seconds with one line whether or not HF_HUB_OFFLINE is set."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from mathsft import hub

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class _Head(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (the http.server name)
        self.send_response(404)  # any answer means the Hub is there
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub.reachable(f"http://127.0.0.1:{server.server_address[1]}", timeout=5.0)
    finally:
        server.shutdown()
    assert not hub.reachable(UNREACHABLE, timeout=5.0)

    def hang(*args: object, **kwargs: object) -> None:  # a name lookup or a connection that never answers
        time.sleep(30)

    monkeypatch.setattr(hub.urllib.request, "urlopen", hang)
    start = time.perf_counter()
    assert not hub.reachable("https://huggingface.co", timeout=0.3)
    assert time.perf_counter() - start < 2.0


def test_offline_if_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config
    import huggingface_hub.constants

    for name in OFFLINE_SWITCHES:  # set, then removed: monkeypatch restores what the switch writes
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)

    assert not hub.offline_if_unreachable(["assets/smoke/model", "./data", None])  # local paths: no probe
    assert "HF_HUB_OFFLINE" not in os.environ
    assert hub.offline_if_unreachable(["assets/smoke/model", "Qwen/Qwen3-0.6B-Base"])
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    # Both libraries read their flag at import; the already imported modules see the switch too.
    assert huggingface_hub.constants.HF_HUB_OFFLINE and huggingface_hub.is_offline_mode()
    assert datasets.config.HF_HUB_OFFLINE

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's explicit choice is never overridden
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert not hub.offline_if_unreachable(["Qwen/Qwen3-0.6B-Base"])
    assert not huggingface_hub.constants.HF_HUB_OFFLINE


def _run(args: list[str], tmp_path: Path, offline: bool) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_SWITCHES}
    env |= {"HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    return time.perf_counter() - start, result


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(  # slow: imports TRL and waits out the probe (about 25 s); run_eval below keeps the class
            ["train_sft.py", "--config", "recipes/smoke/adamw.yaml", "--model_name_or_path", "Qwen/Qwen3-0.6B-Base"],
            marks=pytest.mark.slow,
        ),
        ["run_eval.py", "--model", "Qwen/Qwen3-0.6B-Base", "--dataset", "assets/smoke/data"],
    ],
    ids=["train_sft", "run_eval"],
)
def test_unreachable_hub_fails_fast_with_one_line(args: list[str], tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE, the Hub unreachable, the model not cached: one error line within 10 s (it took 54 s and
    44 retry warnings before)."""
    args = [*args, "--output_dir" if args[0] == "train_sft.py" else "--output", str(tmp_path / "out")]
    elapsed, result = _run(args, tmp_path, offline=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: could not load"), errors
    assert "Qwen/Qwen3-0.6B-Base" in errors[0] and "Retry" not in result.stdout + result.stderr
    if elapsed > 10:  # a busy machine: the imports alone can take that long; compare with HF_HUB_OFFLINE=1
        baseline, _ = _run(args, tmp_path, offline=True)
        assert elapsed <= baseline + hub.PROBE_TIMEOUT_S + 2, (elapsed, baseline)
