import time

import pytest

from selfplay.verify import Verifier, answers_equal, cluster_answers, extract_final_answer
from selfplay.verify.answers import equal_many_unguarded, last_boxed

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def verifier():
    with Verifier(timeout=TIMEOUT, workers=2) as v:
        v.equal("1", "1")  # start the forkserver and workers outside the timed checks
        yield v


@pytest.mark.parametrize(
    "a, b, equal",
    [
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("14.0", "14", True),
        ("1,000", "1000", True),
        ("x+1", "1+x", True),
        ("\\sqrt{2}", "2^{1/2}", True),
        ("\\text{ 7 }", "7", True),
        ("3", "4", False),
        ("1/3", "0.33", False),
        ("", "0", False),
    ],
)
def test_answers_equal(a, b, equal):
    assert answers_equal(a, b) is equal


def test_extraction():
    assert extract_final_answer("so\nTherefore, the final answer is: $\\boxed{\\frac{3}{4}}$") == "\\frac{3}{4}"
    assert extract_final_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert extract_final_answer("The final answer is 42.") == "42"
    assert extract_final_answer("no answer here") is None
    assert extract_final_answer("The final answer is 1/2. Then we eat cake, and more cake.") == "1/2"
    assert extract_final_answer("the final answer is either Sara can take all or she cannot") is None
    assert extract_final_answer("\\boxed{unclosed") is None
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"


def test_cluster_answers_groups_equivalent_forms(verifier):
    classes = verifier.cluster(["1/2", "0.5", None, "3", "3.0", "\\frac{1}{2}", "7"])
    assert classes == [0, 0, None, 1, 1, 0, 2]
    assert cluster_answers([None, None], equal_many_unguarded) == [None, None]


ATTACKS = {
    "power tower": "10^{10^{10^{10}}}",
    "huge factorial": "(10^{1000})!",
    "nested fractions": "\\frac{1}{" * 300 + "2" + "}" * 300,
    "1 MB string": "1" * (1 << 20),
    "malformed latex": "\\frac{1}{2",
    "unbalanced delimiters": "\\left( \\right] \\sqrt[",
    "binary": "\x00\xff\x01}{\\",
    "nested exponentials": "e^{e^{e^{e^{100}}}}",
    "power tower 9": "9^{9^{9^{9}}}",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_adversarial_answers_return_within_the_limit(verifier, name):
    start = time.monotonic()
    result = verifier.equal(ATTACKS[name], "5")
    elapsed = time.monotonic() - start
    assert result is False
    # The limit, plus the cost of killing and replacing a worker.
    assert elapsed < TIMEOUT + 1.0, f"{name} took {elapsed:.1f}s"


def test_guard_keeps_working_after_timeouts_and_counts_them(verifier):
    before = verifier.timeouts
    pairs = [("1/2", "0.5")] * 20 + [(ATTACKS["power tower"], "3")] + [("x+1", "1+x")] * 5
    results = verifier.equal_many(pairs)
    assert results == [True] * 20 + [False] + [True] * 5
    assert verifier.timeouts == before + 2  # the chunk holding it, then the pair on its own


def test_guard_works_from_a_thread(verifier):
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.append(verifier.equal(ATTACKS["power tower"], "1")))
    start = time.monotonic()
    thread.start()
    thread.join()
    assert out == [False] and time.monotonic() - start < TIMEOUT + 1.0
