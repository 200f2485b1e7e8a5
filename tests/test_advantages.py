import numpy as np
import pytest

from selfplay.train.advantages import group_advantages, group_stats, top_groups


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
