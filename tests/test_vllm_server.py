"""Generation on a vLLM server process (`generation_backend: vllm-server`), for real: `selfplay serve` starts
vLLM's own server on this CPU with the embedded model; weights reach it through vLLM's RL API and selfplay's gloo
weight-transfer backend. A server that dies stops the run with a message naming it, and --resume continues."""

import copy
import importlib.util
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml

from selfplay.files import read_jsonl
from tests.conftest import TINY, trainer_logprobs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="no vllm")]

# float32 on both sides: the sampler's log-probs then equal the trainer's to the engine's tolerance
SETTINGS = {**TINY, "generation_backend": "vllm-server", "vllm_dtype": "float32", "dtype": "float32",
            "vllm_server_timeout": 120.0}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`selfplay serve` in a process of its own, as a user starts it."""

    def __init__(self, config_file):
        self.config_file = config_file
        # vLLM logs every request: into a file, since a pipe nobody reads fills and blocks the server mid-request
        self.log = config_file.with_name("server.log")
        self.process = None

    def start(self):
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "selfplay", "serve", "--config",
                                             str(self.config_file)], stdout=log, stderr=subprocess.STDOUT)
        url = yaml.safe_load(self.config_file.read_text())["vllm_server_url"]
        deadline = time.monotonic() + 300
        import requests

        while True:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 5 minutes"
            time.sleep(1)

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("server") / "config.yaml"
    path.write_text(yaml.safe_dump({**SETTINGS, "vllm_server_url": f"http://127.0.0.1:{free_port()}"}))
    return path


@pytest.fixture(scope="module")
def server(config_file):
    running = Server(config_file).start()
    yield running
    running.kill()


def run_command(config_file, run_dir, *flags):
    return subprocess.run([sys.executable, "-m", "selfplay", "--log-level", "WARNING", "run", "--config",
                           str(config_file), "--output-dir", str(run_dir), *flags],
                          capture_output=True, text=True, timeout=900)


def test_the_server_samples_from_the_weights_each_push_gave_it(server, config_file):
    from selfplay.config import SelfPlayConfig, read_yaml_config
    from selfplay.policy import load_policy, render_chat
    from selfplay.policy.vllm_server import VLLMServerBackend
    from selfplay.train.updater import add_lora

    config = SelfPlayConfig(**read_yaml_config(config_file))
    model, tokenizer = load_policy("embedded", dtype="float32")
    backend = VLLMServerBackend(config.vllm_server_url, 60, 0.7, 1.0, sender=True)
    prompt = render_chat(tokenizer, [{"role": "user", "content": "What is 2 + 3?"}])
    try:
        backend.sync(model)
        torch.manual_seed(0)
        trained = add_lora(copy.deepcopy(model), SelfPlayConfig(lora=True))
        with torch.no_grad():  # an update big enough to change what the model writes
            for name, parameter in trained.named_parameters():
                if "lora_B" in name:
                    parameter.add_(torch.randn_like(parameter) * 0.02)
        before = backend.generate([prompt], 1, 16)[0][0]
        assert torch.allclose(torch.tensor(before.logprobs), trainer_logprobs(model, before, 0.7), atol=1e-3)
        assert not torch.allclose(torch.tensor(before.logprobs), trainer_logprobs(trained, before, 0.7), atol=1e-2)
        backend.sync(trained)
        assert backend.served_version() == backend.version
        after = backend.generate([prompt], 1, 16)[0][0]
        assert torch.allclose(torch.tensor(after.logprobs), trainer_logprobs(trained, after, 0.7), atol=1e-3)
    finally:
        backend.close()


def test_a_run_trains_through_the_server_and_stops_naming_it_when_it_dies(server, config_file, tmp_path):
    run_dir = tmp_path / "run"
    done = run_command(config_file, run_dir, "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2]
    updated = [m for m in metrics if m["update/rows"]]
    assert updated, "no step trained: nothing was pushed"
    # each step samples from the weights the last push gave the server (float32 both sides)
    assert all(m["update/sampler_trainer_logprob_gap"] < 1e-3 for m in updated)

    # The server dies in the middle of the run: the run stops, naming it; once it is back, --resume goes on.
    url = yaml.safe_load(config_file.read_text())["vllm_server_url"]
    command = [sys.executable, "-m", "selfplay", "--log-level", "WARNING", "run", "--config", str(config_file),
               "--output-dir", str(run_dir), "--resume", "--max-steps", "6"]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while len(list(read_jsonl(run_dir / "metrics.jsonl"))) < 3:  # step 3 done: the run is in step 4
        assert running.poll() is None and time.monotonic() < deadline, running.stderr.read()[-3000:]
        time.sleep(0.2)
    server.kill()
    _, stderr = running.communicate(timeout=600)
    assert running.returncode != 0 and f"vLLM server at {url}" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr.strip().splitlines()[-1]
    server.start()
    resumed = run_command(config_file, run_dir, "--resume", "--max-steps", "6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_a_server_serving_other_weights_stops_the_run(server, config_file):
    """Another trainer (or a restart) changed the server's weights: the next generation refuses to sample."""
    from selfplay.config import SelfPlayConfig, read_yaml_config
    from selfplay.policy import WeightSyncError, load_policy
    from selfplay.policy.vllm_server import VLLMServerBackend

    config = SelfPlayConfig(**read_yaml_config(config_file))
    model, _ = load_policy("embedded", dtype="float32")
    ours = VLLMServerBackend(config.vllm_server_url, 60, 0.7, 1.0, sender=True)
    try:
        ours.sync(model)
        ours._call("POST", "/update_weight_version", "set another version", {"new_version": "someone-else"})
        with pytest.raises(WeightSyncError, match=f"{config.vllm_server_url} serves weight version 'someone-else'"):
            ours.generate([[1, 2, 3]], 1, 4)
    finally:
        ours.close()
