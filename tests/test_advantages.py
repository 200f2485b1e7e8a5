import math
import numpy as np
import pytest
import torch

from selfplay.train.advantages import group_advantages, group_stats, top_groups
from selfplay.train.loss import policy_loss
from selfplay.train.updater import TrainRow, role_token_weights


def test_advantages_normalised_within_each_group_only():
    rewards = [1.0, 0.0, 10.0, 20.0]
    adv, keep = group_advantages(rewards, ["a", "a", "b", "b"], eps=0.0)
    # Each group is centred and scaled by its own unbiased std, whatever the other group's scale.
    assert adv == pytest.approx([1 / np.sqrt(0.5) * 0.5, -1 / np.sqrt(0.5) * 0.5, -0.5 / np.sqrt(50) * 10, 0.5 / np.sqrt(50) * 10])
    assert adv[0] == pytest.approx(adv[3]) and keep == [True] * 4


def test_zero_variance_and_singleton_groups_are_dropped():
    adv, keep = group_advantages([0.3, 0.3, 0.3, 1.0, 0.0, 5.0], ["x", "x", "x", "y", "y", "z"])
    assert keep == [False, False, False, True, True, False]
    assert adv[:3] == [0.0, 0.0, 0.0]


def test_centre_only_when_not_normalising():
    adv, _ = group_advantages([1.0, 3.0], [0, 0], normalize=False)
    assert adv == [-1.0, 1.0]


def test_top_groups_by_score_among_groups_with_signal():
    groups = group_stats([0, 1, 0, 5, 2, 2], ["a", "a", "b", "b", "c", "c"])
    assert top_groups(groups, {g.key: g.std for g in groups}, 1) == {"b"}
    assert top_groups(groups, {"a": 9, "b": 1, "c": 100}, 1) == {"a"}  # c has no signal


def test_role_token_weights_give_each_role_equal_total_weight():
    rows = [TrainRow([1], [1] * n, 1.0, role, [0.0] * n) for n, role in ((10, "teacher"), (30, "teacher"), (5, "student"))]
    weights = role_token_weights(rows)
    teacher_total = weights[0] * 10 + weights[1] * 30
    student_total = weights[2] * 5
    assert teacher_total == pytest.approx(0.5) and student_total == pytest.approx(0.5)


def test_policy_loss_on_policy_is_minus_weighted_advantage_and_gradient_sign():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, stats = policy_loss(logprobs, logprobs.detach(), torch.tensor([2.0]), mask, torch.tensor([[0.5]]), 0.2)
    assert loss.item() == pytest.approx(-2.0)  # 2 masked-in tokens * 0.5 weight * -A
    loss.backward()
    # Positive advantage: descending the loss raises the log-prob of the completion tokens only.
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -1.0, -1.0])
    assert stats["clip_fraction"] == 0.0


def test_policy_loss_clips_ratio():
    old = torch.tensor([[-1.0]])
    new = torch.tensor([[-1.0 + np.log(2.0)]], requires_grad=True)  # ratio 2
    loss, stats = policy_loss(new, old, torch.tensor([1.0]), torch.ones(1, 1), torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(-1.2)  # min(2 * 1, 1.2 * 1)
    loss.backward()
    assert new.grad.item() == 0.0 and stats["clip_fraction"] == 1.0


def test_clip_fraction_counts_only_tokens_where_the_clipped_branch_is_taken():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))  # ratios 1.5, 0.5, 0.5: all outside [0.8, 1.2]
    advantages = torch.tensor([1.0])
    _, stats = policy_loss(new, old, advantages, torch.ones(1, 3), torch.ones(1, 3), 0.2)
    # A > 0: ratio 1.5 is cut to 1.2 (clipped branch); ratio 0.5 keeps its own gradient (min takes 0.5 < 0.8)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    _, stats = policy_loss(new, old, -advantages, torch.ones(1, 3), torch.ones(1, 3), 0.2)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)  # A < 0: the low ratios are the clipped ones


def test_kl_term_zero_at_reference_and_positive_away():
    lp = torch.tensor([[-1.0, -1.0]])
    zero_adv = torch.tensor([0.0])
    same, stats = policy_loss(lp, lp, zero_adv, torch.ones(1, 2), torch.ones(1, 2), 0.2, lp, kl_beta=0.1)
    assert same.item() == pytest.approx(0.0) and stats["kl"] == pytest.approx(0.0)
    away, stats = policy_loss(lp, lp, zero_adv, torch.ones(1, 2), torch.ones(1, 2), 0.2, lp - 1.0, kl_beta=0.1)
    assert away.item() > 0 and stats["kl"] == pytest.approx(np.exp(-1) + 1 - 1)


def test_truncated_importance_sampling_weights_the_policy_term_by_the_capped_ratio():
    trainer = torch.tensor([[-1.0, -1.0, -1.0]], requires_grad=True)
    mask, weights, adv = torch.tensor([[1.0, 1.0, 0.0]]), torch.ones(1, 3), torch.tensor([1.0])
    plain, _ = policy_loss(trainer, trainer.detach(), adv, mask, weights, 0.2)
    # token 0: the sampler gave it more probability (weight e^-0.5); token 1: less, by a factor 3 > cap 2.
    sampler = torch.tensor([[-0.5, -1.0 - math.log(3.0), -9.0]])
    corrected, stats = policy_loss(trainer, trainer.detach(), adv, mask, weights, 0.2, sampler_logprobs=sampler, is_cap=2.0)
    assert plain.item() == pytest.approx(-2.0)
    assert corrected.item() == pytest.approx(-(math.exp(-0.5) + 2.0))
    assert stats["is_truncated_fraction"] == pytest.approx(0.5)  # of the two completion tokens; the masked one ignored
    assert stats["sampler_trainer_logprob_gap"] == pytest.approx((0.5 + math.log(3.0)) / 2)
    same, stats = policy_loss(trainer, trainer.detach(), adv, mask, weights, 0.2, sampler_logprobs=trainer.detach())
    assert same.item() == pytest.approx(plain.item()) and stats["sampler_trainer_logprob_gap"] == 0.0
