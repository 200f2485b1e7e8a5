"""Answer extraction and equivalence, in-process and unguarded.

Extraction is plain string scanning (linear time, safe on any input). Equivalence goes through math-verify
(sympy underneath), which can hang or explode on adversarial input: never call `equal_unguarded` on model
output directly; go through `selfplay.verify.Verifier`, which runs it in killable worker processes.
"""

from __future__ import annotations

import re
import logging
from collections.abc import Callable, Sequence

# Longest answer we hand to sympy at all: a real final answer is short; a long one is garbage or an attack.
MAX_ANSWER_CHARS = 1000
MAX_FALLBACK_CHARS = 30

# math-verify warns on every call that its own timeouts are off; our process guard enforces time instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_FINAL_ANSWER = re.compile(r"final answer is:?\s*\$?([^\n$]{1,200})", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` (or `\\fbox{...}`) in `text`, else None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
        i += 1
    return None


def normalize(answer: str) -> str:
    """Cheap canonical form used to group identical strings before any symbolic check."""
    answer = answer.strip().strip("$").strip()
    answer = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", answer)
    answer = answer.replace("\\!", "").replace("\\,", "").replace("\\ ", "").replace(" ", "")
    answer = answer.rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", answer):
        answer = answer.split(".")[0]
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", answer):
        answer = answer.replace(",", "")
    return answer


def extract_final_answer(text: str) -> str | None:
    """The final answer a completion commits to: the last `\\boxed{}`, else 'final answer is X', else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        answer = normalize(boxed)
        return answer if 0 < len(answer) <= MAX_ANSWER_CHARS else None
    match = None
    for match in _FINAL_ANSWER.finditer(text):
        pass
    if match is None:
        return None
    # Unanchored text is trusted less than a \boxed{}: up to the sentence's end, and only if it looks like math.
    answer = normalize(re.split(r"\.(?:\s|$)|,\s", match.group(1))[0])
    return answer if 0 < len(answer) <= MAX_FALLBACK_CHARS and re.search(r"[\d\\]", answer) else None


def _parse(answer: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # Timeouts off: math-verify's own are SIGALRM-based and fail off the main thread. The guard enforces time.
    return parse(
        f"${answer}$",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def equal_unguarded(a: str, b: str) -> bool:
    """Mathematical equivalence of two final answers ("1/2" == "0.5" == "\\frac{1}{2}")."""
    a, b = normalize(a), normalize(b)
    if a == b:
        return True
    if not a or not b or len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
        return False
    from math_verify import verify

    try:
        gold, pred = _parse(a), _parse(b)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    except Exception:  # math-verify raises on some malformed LaTeX; an answer we cannot read is not equal
        return False


def equal_many_unguarded(pairs: Sequence[tuple[str, str]]) -> list[bool]:
    return [equal_unguarded(a, b) for a, b in pairs]


def cluster_answers(
    answers: Sequence[str | None], equal_many: Callable[[list[tuple[str, str]]], list[bool]]
) -> list[int | None]:
    """Group answers into equivalence classes; returns a class id per answer (None for no answer).

    Identical normalised strings share a class without a symbolic check; distinct strings are compared
    pairwise in one batch (so the checker can parallelise), then merged with union-find. Class ids are
    numbered by first appearance.
    """
    distinct: list[str] = []
    for answer in answers:
        if answer is not None and answer not in distinct:
            distinct.append(answer)
    pairs = [(i, j) for i in range(len(distinct)) for j in range(i + 1, len(distinct))]
    same = equal_many([(distinct[i], distinct[j]) for i, j in pairs]) if pairs else []
    parent = list(range(len(distinct)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for (i, j), equal in zip(pairs, same):
        if equal:
            parent[max(root(i), root(j))] = min(root(i), root(j))
    class_of_root: dict[int, int] = {}
    for i in range(len(distinct)):
        class_of_root.setdefault(root(i), len(class_of_root))
    class_of = {answer: class_of_root[root(i)] for i, answer in enumerate(distinct)}
    return [None if answer is None else class_of[answer] for answer in answers]
