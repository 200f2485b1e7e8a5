"""The run directory: checkpoints are whole or absent, found and restored through one module; resume cuts the
logs back to the checkpoint. A tiny real Llama with a real LoRA adapter stands in for the policy."""

import json
import random
import shutil

import numpy as np
import pytest
import torch

from selfplay import RUN_FORMAT_VERSION, rundir
from selfplay.config import SelfPlayConfig
from selfplay.files import append_jsonl, read_jsonl


@pytest.fixture
def policy():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tiny = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2)
    return get_peft_model(LlamaForCausalLM(tiny), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))


def save(run_dir, step, policy, keep=2, rng=None, ranks=None, appended=None):
    """`ranks`: the RNG states of every rank (default: this process's, as one rank)."""
    return rundir.save_checkpoint(run_dir, step, model=policy, tokenizer=None, lora=True, trainer_state={"s": step},
                                  rng=ranks or [rundir.rng_state(rng or np.random.default_rng(0))],
                                  appended=appended or {}, keep=keep, state={"base_model": "tiny"})


def killed(*_):
    raise KeyboardInterrupt


def test_checkpoint_is_complete_or_absent_and_old_ones_go(tmp_path, policy, monkeypatch):
    save(tmp_path, 1, policy)
    with monkeypatch.context() as crash:
        crash.setattr(rundir, "write_json", killed)
        with pytest.raises(KeyboardInterrupt):  # killed after the weights were written, before state.json
            save(tmp_path, 2, policy)
    assert [c.step for c in rundir.checkpoints(tmp_path)] == [1]
    for step in (2, 3, 4):
        save(tmp_path, step, policy, appended={"embeddings.bin": step})
    found = rundir.checkpoints(tmp_path)
    assert [c.step for c in found] == [3, 4]
    newest = found[-1]
    assert newest.state == {"base_model": "tiny", "step": 4, "format_version": RUN_FORMAT_VERSION,
                            "appended": {"embeddings.bin": 4}}
    assert newest.is_lora and (newest.adapter_dir / "adapter_model.safetensors").is_file()
    assert newest.trainer_state() == {"s": 4}


def test_find_checkpoint_from_a_run_dir_or_a_checkpoint_folder(tmp_path, policy):
    assert rundir.find_checkpoint(tmp_path) is None  # neither a run nor a checkpoint
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(rundir.RunDirError, match="no complete checkpoint"):
        rundir.find_checkpoint(tmp_path)
    save(tmp_path, 1, policy)
    save(tmp_path, 2, policy)
    assert rundir.find_checkpoint(tmp_path).step == 2
    assert rundir.find_checkpoint(tmp_path / "checkpoints" / "step-1").step == 1


def test_rng_states_round_trip(tmp_path, policy):
    rng = np.random.default_rng(5)
    random.seed(1)
    torch.manual_seed(2)
    checkpoint = save(tmp_path, 1, policy, rng=rng)
    expected = (random.random(), rng.random(), torch.rand(1).item())
    random.seed(99)
    torch.manual_seed(99)
    other = np.random.default_rng(99)
    checkpoint.restore_rng(other, rank=0, world=1)
    assert (random.random(), other.random(), torch.rand(1).item()) == expected


def test_each_rank_restores_its_own_rng_states(tmp_path, policy, caplog):
    shared = np.random.default_rng(5)
    states = []
    for seed in (10, 11):  # two ranks: their own torch streams, one shared numpy stream
        torch.manual_seed(seed)
        states.append(rundir.rng_state(shared))
    checkpoint = save(tmp_path, 1, policy, ranks=states)
    expected_shared = np.random.default_rng(5).random()
    torch.manual_seed(11)
    expected_rank1 = torch.rand(1).item()
    assert draws_after_restore(checkpoint, rank=1, world=2) == (expected_shared, expected_rank1)
    # Resumed by another number of processes: the shared stream is restored, the rank's own stays fresh, said aloud.
    torch.manual_seed(99)
    fresh = torch.rand(1).item()
    assert draws_after_restore(checkpoint, rank=0, world=3) == (expected_shared, fresh)
    assert "written by 2 process(es), this run has 3" in caplog.text


def draws_after_restore(checkpoint, rank, world):
    """The next shared-stream and torch draws after restoring `rank` over fresh seeds."""
    torch.manual_seed(99)
    shared = np.random.default_rng(99)
    checkpoint.restore_rng(shared, rank=rank, world=world)
    return shared.random(), torch.rand(1).item()


def test_corrupt_trainer_state_names_the_file(tmp_path, policy):
    checkpoint = save(tmp_path, 1, policy)
    (checkpoint.path / "trainer.pt").write_bytes(b"garbage")
    with pytest.raises(rundir.RunDirError, match=r"step-1/trainer\.pt: unreadable"):
        checkpoint.trainer_state()


def test_rewind_cuts_logs_and_archive_files_back_to_the_newest_checkpoint(tmp_path, policy):
    rundir.prepare(tmp_path / "run", resume=False)
    run_dir = tmp_path / "run"
    archive = rundir.archive_dir(run_dir)
    archive.mkdir()
    append_jsonl(run_dir / rundir.METRICS, [{"step": s} for s in (1, 2, 3)])
    append_jsonl(run_dir / rundir.CURRICULUM, [{"step": s} for s in (1, 1, 2, 2, 3)])
    (archive / "rows.bin").write_bytes(b"0123456789")  # step 3 appended rows 6..9, then the run was killed
    save(run_dir, 2, policy, appended={"rows.bin": 6})
    assert rundir.rewind(run_dir, SelfPlayConfig()).step == 2
    assert [r["step"] for r in read_jsonl(run_dir / rundir.METRICS)] == [1, 2]
    assert [r["step"] for r in read_jsonl(run_dir / rundir.CURRICULUM)] == [1, 1, 2, 2]
    assert (archive / "rows.bin").read_bytes() == b"012345"
    save(run_dir, 3, policy, appended={"rows.bin": 8})  # records more than the file holds: the archive is lost
    with pytest.raises(rundir.RunDirError, match=r"rows\.bin: 6 bytes, shorter than the 8"):
        rundir.rewind(run_dir, SelfPlayConfig())
    for checkpoint in rundir.checkpoints(run_dir):
        shutil.rmtree(checkpoint.path)
    assert rundir.rewind(run_dir, SelfPlayConfig()) is None and not archive.exists()  # from step 0: seeds again


def test_prepare_errors(tmp_path):
    file = tmp_path / "afile"
    file.write_text("x")
    with pytest.raises(rundir.RunDirError, match="afile exists and is a file"):
        rundir.prepare(file, resume=False)
    with pytest.raises(rundir.RunDirError, match="holds no run to resume"):
        rundir.prepare(tmp_path / "nothing", resume=True)
    run = tmp_path / "run"
    rundir.prepare(run, resume=False)
    with pytest.raises(rundir.RunDirError, match="already holds a run; pass --resume"):
        rundir.prepare(run, resume=False)
    rundir.prepare(run, resume=True)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "format_version": 1}))
    with pytest.raises(rundir.RunDirError, match=r"run\.json: field 'format_version' is 1, this selfplay"):
        rundir.prepare(run, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(rundir.RunDirError, match="not empty"):
        rundir.prepare(other, resume=False)
