"""The optimizer step on the real embedded model: full fine-tuning, LoRA, KL to the reference, several updates."""

import pytest
import torch

from selfplay.config import SelfPlayConfig
from selfplay.policy import load_policy
from selfplay.policy import Sample, TransformersBackend, render_chat
from selfplay.train.loss import row_weights
from selfplay.train.updater import TrainRow, Updater, add_lora
from tests.conftest import trainer_logprobs

pytestmark = pytest.mark.slow  # loads the embedded policy


@pytest.fixture(scope="module")
def policy():
    return load_policy("embedded", dtype="float32")  # exact comparisons: bfloat16 differs by ~1e-2


def token_logprobs(model, prompt, completion) -> list[float]:
    return trainer_logprobs(model, Sample(prompt, completion, "", [], True)).tolist()


def rows(model, tokenizer):
    """Rows as if sampled from `model` itself (its own log-probs as the sampler's)."""
    prompt = tokenizer("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    good = tokenizer(" 5", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    bad = tokenizer(" seven hundred", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [TrainRow(prompt, completion, advantage, role, token_logprobs(model, prompt, completion))
            for completion, advantage, role in ((good, 1.0, "student"), (bad, -1.0, "student"), (good, 0.5, "teacher"))]


def sequence_logprob(model, row):
    return sum(token_logprobs(model, row.prompt_ids, row.completion_ids))


def test_full_fine_tuning_moves_probability_towards_positive_advantage(policy):
    import copy

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    batch = rows(model, tokenizer)
    before = [sequence_logprob(model, r) for r in batch[:2]]
    config = SelfPlayConfig(learning_rate=1e-4, max_grad_norm=1.0, train_micro_batch_size=2)
    stats = Updater(model, config, tokenizer.pad_token_id).step(batch)
    after = [sequence_logprob(model, r) for r in batch[:2]]
    assert after[0] > before[0] and after[1] < before[1]
    assert stats["grad_norm"] > 0 and stats["clip_fraction"] == 0.0  # one update: ratio is 1
    assert stats["sampler_trainer_logprob_gap"] < 1e-4 and stats["is_truncated_fraction"] == 0.0  # sampled on-policy


def test_lora_trains_only_the_adapter_and_supports_kl_and_clipping(policy):
    # Clipping acts only from the second pass on (updates_per_step > 1): the first pass's ratio is exactly 1.
    import copy

    base = copy.deepcopy(policy[0])
    tokenizer = policy[1]
    config = SelfPlayConfig(lora=True, learning_rate=5e-3, kl_beta=0.1, updates_per_step=3, max_grad_norm=10.0)
    model = add_lora(base, config)
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    adapter = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    stats = Updater(model, config, tokenizer.pad_token_id).step(rows(model, tokenizer))
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in adapter.items())
    # Later passes see a moved policy: the ratio leaves 1 and the KL to the adapter-free base is positive.
    assert stats["kl"] > 0 and stats["clip_fraction"] > 0.0


def test_masked_tokens_stay_out_of_the_loss_and_of_the_role_token_count(policy):
    model, tokenizer = policy
    good, _, teacher = rows(model, tokenizer)
    mask = [i % 2 == 0 for i in range(len(teacher.completion_ids))]
    masked = TrainRow(teacher.prompt_ids, teacher.completion_ids, 1.0, "teacher", teacher.sampler_logprobs, mask)
    batch = Updater(model, SelfPlayConfig(), tokenizer.pad_token_id)._batch([masked, good])  # one prompt, shared
    completion = batch.completion
    assert batch.prompt.tolist() == masked.prompt_ids and batch.completions.shape[0] == 2
    assert completion[0, : len(mask)].tolist() == [float(m) for m in mask]
    assert completion[0].sum() == sum(mask) and completion[1].sum() == len(good.completion_ids)
    assert row_weights(["teacher", "student"], [masked.trained_tokens, good.trained_tokens], "dapo", {}) == [
        1 / (2 * sum(mask)), 1 / (2 * len(good.completion_ids))]


def test_micro_batches_hold_rows_of_one_prompt_largest_first():
    from selfplay.train.updater import micro_batches

    def row(prompt, length):
        return TrainRow(prompt, [1] * length, 0.0, "student", [0.0] * length)

    batch = [row([1, 2], 3), row([7, 8, 9], 5), row([1, 2], 1), row([1, 2], 2), row([7, 8, 9], 4)]
    assert micro_batches(batch, 2) == [[4, 1], [2, 3], [0]]  # by prompt, short completions together


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_shared_prompt_gives_the_log_probs_and_gradients_of_whole_rows(policy, attention):
    """The prompt's keys and values computed once for all its rows (the update's default) against every row run
    whole (`shared_prompt: false`): the same log-probs and the same gradient, in a fraction of the work, with
    either attention implementation (eager is CPU's default, sdpa GPU's)."""
    import copy

    model, tokenizer = policy
    model = copy.deepcopy(model)
    model.set_attn_implementation(attention)
    prompt = tokenizer("Tom has 3 bags of 4 apples. How many apples does he have?", add_special_tokens=False)["input_ids"]
    completions = [(tokenizer(text, add_special_tokens=False)["input_ids"], a)
                   for text, a in ((" 12 apples", 1.0), (" He has 7.", -1.0), (" 3 x 4 = 12, so 12.", 0.5))]
    batch = [TrainRow(prompt, ids, a, "student", [0.0] * len(ids)) for ids, a in completions]
    seen = {}
    for checkpointing in (False, True):
        config = SelfPlayConfig(lora=True, learning_rate=1e-9, max_grad_norm=1e9, dtype="float32",
                                shared_prompt=not checkpointing, temperature=0.7)
        torch.manual_seed(0)  # the same LoRA initialisation both ways
        updater = Updater(add_lora(copy.deepcopy(model), config), config, tokenizer.pad_token_id)
        logprobs = updater.trainer_logprobs(batch)
        sampled = [TrainRow(r.prompt_ids, r.completion_ids, r.advantage, r.role, lp) for r, lp in zip(batch, logprobs)]
        seen[checkpointing] = (logprobs, updater.step(sampled)["grad_norm"])
    for shared, whole in zip(seen[False][0], seen[True][0]):
        assert shared == pytest.approx(whole, abs=1e-4)
    assert seen[False][1] == pytest.approx(seen[True][1], rel=1e-3) and seen[False][1] > 0  # float32 sums


def changed_fraction(before: torch.Tensor, after: torch.Tensor) -> float:
    return (before.float() != after.float()).float().mean().item()


def test_bf16_full_fine_tuning_at_the_reference_learning_rate_moves_its_fp32_master_weights(policy):
    """The reference setting (bf16, lr 3e-7): stepping bf16 weights directly rounds almost every update away."""
    import copy

    tokenizer = policy[1]
    config = SelfPlayConfig(learning_rate=3e-7, dtype="bfloat16", max_grad_norm=1.0, weight_decay=0.0)
    fractions = {}
    for weights in (torch.float32, torch.bfloat16):  # fp32 masters (what selfplay loads), and bf16 stepped as is
        model = copy.deepcopy(policy[0]).to(weights)
        layer = model.model.layers[3].mlp.down_proj.weight
        before = layer.detach().clone()
        stats = Updater(model, config, tokenizer.pad_token_id, torch.bfloat16).step(rows(model, tokenizer))
        assert stats["skipped_steps"] == 0 and stats["grad_norm"] > 0
        fractions[weights] = changed_fraction(before, layer.detach())
    assert fractions[torch.float32] > 0.9 and fractions[torch.bfloat16] < 0.1, fractions


def test_a_non_finite_gradient_skips_the_optimizer_step_and_leaves_the_weights_alone(policy):
    import copy
    import dataclasses
    import math

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    updater = Updater(model, SelfPlayConfig(learning_rate=1e-3), tokenizer.pad_token_id)
    poisoned = [dataclasses.replace(r, advantage=float("nan")) for r in rows(model, tokenizer)]
    stats = updater.step(poisoned)
    assert stats["skipped_steps"] == 1 and math.isnan(stats["grad_norm"])
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    assert not updater.optimizer.state  # no moments
    assert updater.scheduler.last_epoch == 1  # the schedule follows the run's steps, skipped or not
    assert updater.step(rows(model, tokenizer))["skipped_steps"] == 0  # the next clean batch trains as usual
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())


def test_the_trainer_scores_tokens_at_the_sampling_temperature(policy):
    """The recipe samples at 0.7: rows sampled there must meet a trainer whose log-probs are taken at 0.7 too,
    or every ratio is off (the gap would be the difference between two temperatures' distributions)."""
    import copy

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    torch.manual_seed(0)
    prompt = render_chat(tokenizer, [{"role": "user", "content": "Count to five."}])
    samples = TransformersBackend(model, tokenizer, 0.7, 1.0, 4).generate([prompt], 3, 16)[0]
    batch = [TrainRow(s.prompt_ids, s.completion_ids, a, "student", s.logprobs) for s, a in zip(samples, (1, -1, 0.5))]
    at_sampling = Updater(model, SelfPlayConfig(temperature=0.7, learning_rate=1e-9), tokenizer.pad_token_id)
    assert at_sampling.step(batch)["sampler_trainer_logprob_gap"] < 1e-4
    at_one = Updater(model, SelfPlayConfig(temperature=1.0, learning_rate=1e-9), tokenizer.pad_token_id)
    assert at_one.step(batch)["sampler_trainer_logprob_gap"] > 0.05


def tiny_model(kind: str, dropout: float):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":  # dropout as nn.Dropout modules
        config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=64,
                                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    else:  # Llama's attention dropout, a float its attention reads while training
        config = AutoConfig.for_model("llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                      attention_dropout=dropout)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_model_with_dropout_trains_without_it(kind):
    """pi_old and the sampler have no dropout; a loss computed with it saw a ratio far from 1 on the first pass."""
    model = tiny_model(kind, 0.3)
    generator = torch.Generator().manual_seed(1)
    rows = [TrainRow(torch.randint(1, 64, (6,), generator=generator).tolist(),
                     torch.randint(1, 64, (8,), generator=generator).tolist(), a, "student", [0.0] * 8)
            for a in (1.0, -1.0)]
    model.eval()
    sampler = Updater(model, SelfPlayConfig(), 0).trainer_logprobs(rows)  # eval mode, as a sampler computes
    rows = [TrainRow(r.prompt_ids, r.completion_ids, r.advantage, r.role, lp) for r, lp in zip(rows, sampler)]
    stats = Updater(model, SelfPlayConfig(learning_rate=1e-9, train_micro_batch_size=2), 0).step(rows)
    assert stats["sampler_trainer_logprob_gap"] < 1e-5  # the loss's forward pass (train mode) saw no dropout


def test_logged_statistics_are_token_means_of_the_whole_batch_whatever_the_micro_batch(policy):
    import copy

    model, tokenizer = policy
    batch = rows(model, tokenizer)
    seen = []
    for micro_batch in (1, 3):
        config = SelfPlayConfig(lora=True, learning_rate=5e-3, kl_beta=0.1, updates_per_step=2,
                                train_micro_batch_size=micro_batch, max_grad_norm=10.0)
        torch.manual_seed(0)
        seen.append(Updater(add_lora(copy.deepcopy(model), config), config, tokenizer.pad_token_id).step(batch))
    for key in ("kl", "clip_fraction", "sampler_trainer_logprob_gap", "loss", "grad_norm"):
        assert seen[0][key] == pytest.approx(seen[1][key], rel=1e-4, abs=1e-5), key  # padding: 4e-6
    assert seen[0]["kl"] > 0 and seen[0]["clip_fraction"] > 0  # the second pass moved: the test measures something


def test_the_logged_learning_rate_is_the_one_the_update_used_and_the_schedule_follows_every_step(policy):
    import copy

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    config = SelfPlayConfig(learning_rate=1e-3, lr_schedule="linear", warmup_steps=2, max_steps=6, lora=True)
    updater = Updater(add_lora(model, config), config, tokenizer.pad_token_id)
    batch = rows(updater.model, tokenizer)
    logged = [updater.step(batch)["lr"]]  # warm-up: 0, then 0.5e-3
    updater.skip()  # a step without rows: the schedule still moves on
    logged.append(updater.step(batch)["lr"])
    assert logged == pytest.approx([0.0, 1e-3 * (6 - 2) / (6 - 2)])
