import itertools
from pathlib import Path

import numpy as np
import pytest

from selfplay.eval.benchmarks import STANDARD, BenchmarkError, expand, load_benchmark
from selfplay.eval.benchmarks import resolve_benchmarks_dir
from selfplay.eval.evaluate import EvalSettings, ProblemResult, ResultParts, comparison
from selfplay.eval.metrics import (bootstrap_ci, expansion_rate, macro_bootstrap_ci, majority_correct, pass_at_k,
                                   summarize)


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_pass_at_k_matches_enumeration_of_subsets(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(correct, k))


def test_pass_at_k_rejects_bad_k():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_correct():
    assert majority_correct([0, 0, 1, None], [True, True, False, False])
    assert not majority_correct([0, 1, 1], [True, False, False])
    assert majority_correct([0, 1], [True, False])  # a tie goes to the class seen first
    assert not majority_correct([None, None], [False, False])


def test_bootstrap_interval_contains_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.random(20), rng.random(2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def test_macro_interval_weighs_each_benchmark_equally_whatever_its_size():
    # constant within each benchmark: every resample has the same macro mean, that of the two means (not the pooled)
    assert macro_bootstrap_ci([[1.0] * 10, [0.0] * 1000]) == (0.5, 0.5)
    rng = np.random.default_rng(2)
    small, large = rng.random(30), rng.random(300) + 1.0
    low, high = macro_bootstrap_ci([small, large])
    assert low < (small.mean() + large.mean()) / 2 < high
    assert np.isnan(macro_bootstrap_ci([small, []])[0])


def _results(bench: str, correct: list[list[bool]]) -> list[ProblemResult]:
    return [ProblemResult(bench, str(i), "q", "1", ["s"] * len(c), ["1"] * len(c), c, False)
            for i, c in enumerate(correct)]


def test_comparison_is_the_compared_model_minus_the_base_per_set_and_macro():
    base = {"a": _results("a", [[False, False], [True, False]]), "b": _results("b", [[False, False]] * 4)}
    other = {"a": _results("a", [[True, True], [True, False]]), "b": _results("b", [[False, False]] * 4)}
    result = comparison(base, other, n=2, seed=0)
    assert result["benchmarks"]["a"]["mean@2_difference"] == pytest.approx(0.5)
    assert result["benchmarks"]["a"]["expansion_rate"] == 1.0  # the one problem the base never solved
    assert result["benchmarks"]["b"]["mean@2_difference"] == 0.0
    assert result["benchmarks"]["b"]["expansion_rate"] == 0.0
    assert result["macro"]["mean@2_difference"] == pytest.approx(0.25)  # sets weigh alike, not problems
    low, high = result["macro"]["difference_ci95"]
    assert 0.0 <= low <= 0.25 <= high <= 0.5


def test_result_parts_are_found_by_model_and_settings_whatever_the_benchmark_list(tmp_path):
    results = _results("a", [[True, False], [False, False]])
    ResultParts(tmp_path, EvalSettings(bench="a")).put("embedded", "a", results)
    assert ResultParts(tmp_path, EvalSettings(bench="a,b")).get("embedded", "a") == results
    assert ResultParts(tmp_path, EvalSettings(bench="a")).get("embedded", "b") is None
    assert ResultParts(tmp_path, EvalSettings(bench="a")).get("some/other-model", "a") is None
    assert ResultParts(tmp_path, EvalSettings(bench="a", n=8)).get("embedded", "a") is None
    assert ResultParts(tmp_path, EvalSettings(bench="a", max_new_tokens=256)).get("embedded", "a") is None


def test_expansion_rate():
    assert expansion_rate([True, False, False, False], [True, True, False, True]) == pytest.approx(2 / 3)
    assert expansion_rate([True], [False]) is None


def test_summarize_fields():
    summary = summarize([[True, False], [False, False]], [True, False])
    assert summary["mean@2"] == 0.25 and summary["pass@1"] == 0.25 and summary["pass@2"] == 0.5
    assert summary["maj@2"] == 0.5 and summary["problems"] == 2


BENCH = resolve_benchmarks_dir("../shared/benchmarks")
KNOWN = {  # first two rows of each shared set, answers read through its adapter
    "gsm8k": ["18", "3"],
    "math500": ["\\left( 3, \\frac{\\pi}{2} \\right)", "p - q"],
    "minerva_math": ["1.6", "4.5e33"],
    "olympiadbench": ["2", "\\frac{1}{2 n+2}"],
    "aime24": ["204", "113"],
    "aime25": ["70", "588"],
    "amc23": ["27", "36"],
    "mawps_singleop": ["14", "9"],
    "mawps_addsub": ["43", "26"],
    "mawps_multiarith": ["39", "8"],
    "mawps_singleeq": ["43", "26"],
}


@pytest.mark.skipif(not Path(BENCH).exists(), reason="shared/benchmarks is not beside this checkout")
@pytest.mark.parametrize("name", sorted(STANDARD))
def test_benchmark_adapters(name):
    items = load_benchmark(name, BENCH, limit=2)
    assert [i.answer for i in items] == KNOWN[name]
    assert all(i.question.strip() for i in items)


def test_custom_file_with_fields(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"q": "1+1?", "a": 2.0}\n{"q": "2+2?", "a": "#### 4"}\n')
    items = load_benchmark(str(path), question_field="q", answer_field="a")
    assert [(i.question, i.answer) for i in items] == [("1+1?", "2"), ("2+2?", "4")]
    with pytest.raises(BenchmarkError, match="--question-field"):
        load_benchmark(str(path))


def test_expand_groups():
    assert expand("gsm8k, mawps") == ["gsm8k", "mawps_singleop", "mawps_addsub", "mawps_multiarith", "mawps_singleeq"]


def test_the_format_independent_figure_and_its_paired_gain():
    """A model that only learns to box its answers gains on the strict figure, not on the lenient one."""
    from selfplay.eval.evaluate import ProblemResult, benchmark_summary, comparison

    def result(correct, lenient):
        return ProblemResult("b", "1", "p", "3", ["s"] * 2, ["3"] * 2, correct, False, lenient)

    base = [result([False, False], [True, False]), result([False, False], [True, True])]  # right, never boxed
    boxed = [result([True, False], [True, False]), result([True, True], [True, True])]  # the same answers, boxed
    assert benchmark_summary(base)["lenient_mean@2"] == benchmark_summary(boxed)["lenient_mean@2"] == 0.75
    gains = comparison({"b": base}, {"b": boxed}, 2, 0)["macro"]
    assert gains["mean@2_difference"] == 0.75 and gains["lenient_mean@2_difference"] == 0.0
