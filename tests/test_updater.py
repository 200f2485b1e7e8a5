"""The optimizer step on the real embedded model: full fine-tuning, LoRA, KL to the reference, several updates."""

import pytest
import torch

from selfplay.config import SelfPlayConfig
from selfplay.policy import load_policy
from selfplay.train.updater import TrainRow, Updater, add_lora, role_token_weights
from tests.conftest import completion_logprobs

pytestmark = pytest.mark.slow  # loads the embedded policy


@pytest.fixture(scope="module")
def policy():
    return load_policy("embedded")


def token_logprobs(model, prompt, completion) -> list[float]:
    return completion_logprobs(model, prompt, completion).tolist()


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
    batch = Updater(model, SelfPlayConfig(), tokenizer.pad_token_id)._batch([masked, good])
    completion = batch.completion
    # The window starts at the earliest completion's first log-prob position (both prompts are equal here).
    assert batch.start == len(masked.prompt_ids) - 1
    assert completion[0, : len(mask)].tolist() == [float(m) for m in mask]
    assert completion[0].sum() == sum(mask) and completion[1].sum() == len(good.completion_ids)
    assert role_token_weights([masked, good]) == [1 / (2 * sum(mask)), 1 / (2 * len(good.completion_ids))]


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
    assert not updater.optimizer.state and updater.scheduler.last_epoch == 0  # no moments, no schedule step
    assert updater.step(rows(model, tokenizer))["skipped_steps"] == 0  # the next clean batch trains as usual
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())
