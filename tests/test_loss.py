"""The loss on hand-made tensors, each variant against its formula (TRL's meanings, trl/trainer/grpo_trainer.py
`_compute_loss`), and the row weights that carry each `loss_type`'s normalisation per role."""

import math

import numpy as np
import pytest
import torch

from selfplay.train.loss import LossSettings, policy_loss, row_weights

PLAIN = LossSettings(clip_low=0.2, clip_high=0.2)
MAX_TOKENS = {"teacher": 100, "student": 50}


def loss_of(new, old, advantages, mask=None, weights=None, settings=PLAIN, **extra):
    mask = torch.ones_like(old) if mask is None else mask
    weights = torch.ones(old.shape[0], 1) if weights is None else weights
    return policy_loss(new, old, torch.tensor(advantages), mask, weights, settings, **extra)


# ---------------------------------------------------------------- row weights: loss_type, per role
ROLES, TOKENS = ["teacher", "teacher", "student"], [10, 30, 5]


def test_dapo_weighs_every_token_of_a_role_alike_and_the_roles_half_each():
    weights = row_weights(ROLES, TOKENS, "dapo", MAX_TOKENS)
    assert weights == pytest.approx([1 / (2 * 40), 1 / (2 * 40), 1 / (2 * 5)])
    assert weights[0] * 10 + weights[1] * 30 == pytest.approx(0.5) and weights[2] * 5 == pytest.approx(0.5)


def test_grpo_averages_each_row_then_the_roles_rows():
    # TRL grpo: ((loss * mask).sum(-1) / mask.sum(-1)).mean(): a row's tokens weigh 1 / (rows x its tokens)
    assert row_weights(ROLES, TOKENS, "grpo", MAX_TOKENS) == pytest.approx(
        [1 / (2 * 2 * 10), 1 / (2 * 2 * 30), 1 / (2 * 1 * 5)])


def test_dr_grpo_divides_by_rows_times_the_roles_token_limit():
    # TRL dr_grpo: (loss * mask).sum() / (rows x max_completion_length): no length bias
    assert row_weights(ROLES, TOKENS, "dr_grpo", MAX_TOKENS) == pytest.approx(
        [1 / (2 * 2 * 100), 1 / (2 * 2 * 100), 1 / (2 * 1 * 50)])


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_a_missing_role_does_not_change_the_other_roles_weights(loss_type):
    both = row_weights(ROLES, TOKENS, loss_type, MAX_TOKENS)
    teacher_only = row_weights(ROLES[:2], TOKENS[:2], loss_type, MAX_TOKENS)
    assert teacher_only == pytest.approx(both[:2])  # it used to double (0.05 -> 0.10) when students had no rows


def test_rows_without_trained_tokens_count_in_grpo_and_dr_grpo_row_totals():
    with_masked = row_weights(["student", "student"], [8, 0], "grpo", MAX_TOKENS)
    assert with_masked[0] == pytest.approx(1 / (2 * 2 * 8))  # TRL's mean runs over the masked row too
    assert row_weights(["student", "student"], [8, 0], "dapo", MAX_TOKENS)[0] == pytest.approx(1 / (2 * 8))


# ---------------------------------------------------------------- the policy term
def test_on_policy_loss_is_minus_weighted_advantage_and_gradient_sign():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss, sums = loss_of(logprobs, logprobs.detach(), [2.0], mask, torch.tensor([[0.5]]))
    assert loss.item() == pytest.approx(-2.0)  # 2 masked-in tokens * 0.5 weight * -A
    loss.backward()
    # Positive advantage: descending the loss raises the log-prob of the completion tokens only.
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -1.0, -1.0])
    assert sums["clipped_tokens"] == 0 and sums["tokens"] == 2


def test_the_ratio_is_clipped():
    old = torch.tensor([[-1.0]])
    new = torch.tensor([[-1.0 + np.log(2.0)]], requires_grad=True)  # ratio 2
    loss, sums = loss_of(new, old, [1.0])
    assert loss.item() == pytest.approx(-1.2)  # min(2 * 1, 1.2 * 1)
    loss.backward()
    assert new.grad.item() == 0.0 and sums["clipped_tokens"] == 1


def test_clip_higher_raises_only_the_upper_bound():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[2.0, 0.5]]))
    higher = LossSettings(clip_low=0.2, clip_high=0.28)
    up, _ = loss_of(new, old, [1.0], settings=higher)
    assert up.item() == pytest.approx(-(1.28 + 0.5))  # A > 0: min(2, 1.28) and min(0.5, 0.8)
    down, _ = loss_of(new, old, [-1.0], settings=higher)
    assert down.item() == pytest.approx(-(-2.0 + -0.8))  # A < 0: min(-2, -1.28) and min(-0.5, -0.8)


def test_clip_fraction_counts_only_tokens_where_the_clipped_branch_is_taken():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.5]]))  # ratios 1.5, 0.5, 0.5: all outside [0.8, 1.2]
    _, sums = loss_of(new, old, [1.0])
    # A > 0: ratio 1.5 is cut to 1.2 (clipped branch); ratio 0.5 keeps its own gradient (min takes 0.5 < 0.8)
    assert sums["clipped_tokens"] == 1
    _, sums = loss_of(new, old, [-1.0])
    assert sums["clipped_tokens"] == 2  # A < 0: the low ratios are the clipped ones


def test_sequence_level_ratio_is_the_exp_of_the_rows_mean_log_ratio():
    old = torch.zeros(2, 3)
    log_ratio = torch.tensor([[0.1, -0.3, 0.05], [0.4, 0.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the 9.0 is padding: no part of the mean
    new = log_ratio.clone().requires_grad_()
    gspo = LossSettings(clip_low=0.2, clip_high=0.2, importance_sampling_level="sequence")
    loss, _ = loss_of(new, old, [1.0, 1.0], mask, settings=gspo)
    first, second = math.exp((0.1 - 0.3 + 0.05) / 3), math.exp(0.4 / 2)  # 0.861 and 1.221 (clipped to 1.2)
    assert loss.item() == pytest.approx(-(3 * first + 2 * 1.2))
    loss.backward()
    # every token of the first row gets the same gradient: d/dx of -exp(mean) over its 3 tokens, times 3 tokens
    assert new.grad[0].tolist() == pytest.approx([-first] * 3)
    assert new.grad[1].tolist() == [0.0, 0.0, 0.0]  # clipped


# ---------------------------------------------------------------- the sampler correction
SAMPLER_CASE = dict(trainer=[[-1.0, -1.0, -1.0]], mask=[[1.0, 1.0, 0.0]],
                    # token 0: the sampler gave it more probability (ratio e^-0.5); token 1: less, by 3 > cap 2
                    sampler=[[-0.5, -1.0 - math.log(3.0), -9.0]])


@pytest.mark.parametrize(("mode", "expected", "corrected"), [
    ("token_truncate", -(math.exp(-0.5) + 2.0), 1),
    ("token_mask", -(math.exp(-0.5) + 0.0), 1),
    # the row's ratio is e^-0.5 x 3 = 1.82, under the cap: both tokens weighted by it
    ("sequence_truncate", -2 * 3 * math.exp(-0.5), 0),
    ("sequence_mask", -2 * 3 * math.exp(-0.5), 0),
])
def test_the_sampler_correction_by_mode(mode, expected, corrected):
    trainer = torch.tensor(SAMPLER_CASE["trainer"], requires_grad=True)
    settings = LossSettings(0.2, 0.2, sampler_correction=mode, sampler_cap=2.0)
    loss, sums = loss_of(trainer, trainer.detach(), [1.0], torch.tensor(SAMPLER_CASE["mask"]), settings=settings,
                         sampler_logprobs=torch.tensor(SAMPLER_CASE["sampler"]))
    assert loss.item() == pytest.approx(expected)
    assert sums["sampler_corrected_tokens"] == corrected
    assert sums["sampler_gap_sum"] == pytest.approx(0.5 + math.log(3.0))  # the masked token ignored


@pytest.mark.parametrize("mode", ["sequence_truncate", "sequence_mask"])
def test_a_sequence_whose_ratio_passes_the_cap_is_truncated_or_masked_whole(mode):
    trainer = torch.zeros(1, 3, requires_grad=True)
    sampler = torch.full((1, 3), -0.5)  # each token 1.65x, the row 4.48x, over the cap of 2
    settings = LossSettings(0.2, 0.2, sampler_correction=mode, sampler_cap=2.0)
    loss, sums = loss_of(trainer, trainer.detach(), [1.0], settings=settings, sampler_logprobs=sampler)
    assert loss.item() == pytest.approx(-3 * 2.0 if mode == "sequence_truncate" else 0.0)
    assert sums["sampler_corrected_tokens"] == 3


def test_no_correction_when_the_sampler_is_the_trainer():
    trainer = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    plain, _ = loss_of(trainer, trainer.detach(), [1.0])
    same, sums = loss_of(trainer, trainer.detach(), [1.0], sampler_logprobs=trainer.detach())
    assert same.item() == pytest.approx(plain.item()) and sums["sampler_gap_sum"] == 0.0


# ---------------------------------------------------------------- the KL term
def test_kl_term_zero_at_reference_and_positive_away():
    lp = torch.tensor([[-1.0, -1.0]])
    kl = LossSettings(0.2, 0.2, kl_beta=0.1)
    same, sums = loss_of(lp, lp, [0.0], settings=kl, ref_logprobs=lp)
    assert same.item() == pytest.approx(0.0) and sums["kl_sum"] == pytest.approx(0.0)
    away, sums = loss_of(lp, lp, [0.0], settings=kl, ref_logprobs=lp - 1.0)
    assert away.item() == pytest.approx(0.1 * 2 * math.exp(-1)) and sums["kl_sum"] == pytest.approx(2 * math.exp(-1))


def test_padding_can_not_overflow_into_the_loss():
    """At masked positions the log-probs are whatever the padding gives; exp(ref - logprob) there overflowed to
    inf, and inf x 0 made the loss NaN and skipped the step."""
    lp = torch.tensor([[-1.0, -1.0, 100.0]], requires_grad=True)  # garbage where masked: every exp overflows
    ref = torch.tensor([[-1.0, -1.0, 300.0]])
    sampler = torch.tensor([[-1.0, -1.0, -900.0]])
    settings = LossSettings(0.2, 0.2, kl_beta=0.1, sampler_correction="sequence_truncate")
    loss, sums = loss_of(lp, torch.tensor([[-1.0, -1.0, -400.0]]), [1.0], torch.tensor([[1.0, 1.0, 0.0]]),
                         settings=settings, ref_logprobs=ref, sampler_logprobs=sampler)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(lp.grad).all() and math.isfinite(sums["kl_sum"])
