"""Answer extraction and equivalence, in-process and unguarded.

Extraction is plain string scanning (linear time, safe on any input). Equivalence goes through math-verify
(sympy underneath), which can hang or explode on adversarial input: never call `equal_unguarded` on model
output directly; go through `selfplay.verify.Verifier`, which runs it in killable worker processes.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Sequence

# Longest answer we hand to sympy at all: a real final answer is short; a long one is garbage or an attack.
MAX_ANSWER_CHARS = 1000
MAX_FALLBACK_CHARS = 30

# math-verify warns on every call that its own timeouts are off; our process guard enforces time instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)

# No two quantifiers may match the same characters: the old `\\text\{\s*([^{}]*)\}` backtracked quadratically
# (a \text{ and 30,000 spaces held the GIL for 10 s); the spaces go with every other space below.
_TEXT = re.compile(r"\\text\{([^{}]*)\}")
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
    answer = _TEXT.sub(r"\1", answer)
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
        if len(boxed) > MAX_ANSWER_CHARS:  # before any parsing: normalising only shortens
            return None
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


# A number as a completion writes it at its end: a sign, digits with thousands commas, a decimal part, or a/b.
_LAST_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?")


def lenient_answer(text: str) -> str | None:
    """The answer a completion gives, however it writes it: its strict answer (`extract_final_answer`), else the
    last number it writes. Format-independent evaluation scores this, so that a model that learns to box its
    answer gains there only if it also gets more answers right."""
    strict = extract_final_answer(text)
    if strict is not None:
        return strict
    match = None
    for match in _LAST_NUMBER.finditer(text[-MAX_ANSWER_CHARS * 4:]):
        pass
    return normalize(match.group()) if match else None


def _parse(answer: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # Timeouts off: math-verify's own are SIGALRM-based and fail off the main thread. The guard enforces time.
    return parse(
        f"${answer}$",
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


# An answer's reading: math-verify's parse of it, pickled, so that it is parsed once (in a killable worker) and
# compared in any worker; UNDEFINED for a value that is not a number; None for an answer it cannot read.
Reading = bytes | str | None
UNDEFINED = "undefined"  # nan, 0/0, 1/0: equal to nothing, itself included
MAX_READING_BYTES = 64 << 10  # a longer reading is a huge number computed in full: unreadable, not shipped


def reading(answer: str) -> Reading:
    """The reading of a normalised answer (see `Reading`)."""
    if answer.lower().lstrip("+-") == "nan":
        return UNDEFINED
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    import sympy

    # Besides parsing, what math-verify's comparison evaluates of each answer on its own (`doit`: "10^{10^{10}}"
    # is parsed lazily and computed there) is done here once, so an answer too costly to evaluate fails now, in
    # one task. The reading keeps the parse itself: evaluating early changes verdicts (9% equals 9 unevaluated).
    try:
        parsed = _parse(answer)
        evaluated = [value.doit() if isinstance(value, sympy.Basic) else value for value in parsed]
        too_large = len(pickle.dumps(evaluated)) > MAX_READING_BYTES
    except Exception:  # math-verify raises on some malformed LaTeX; a MemoryError under the worker's limit
        return None
    if any(isinstance(value, sympy.Basic) and value.has(sympy.nan, sympy.zoo) for value in evaluated):
        return UNDEFINED
    return None if not parsed or too_large else pickle.dumps(parsed)


def settled(a: str, b: str, reading_a: Reading, reading_b: Reading) -> bool | None:
    """The verdict on two normalised answers that needs no symbolic comparison, or None when one is needed."""
    if UNDEFINED in (reading_a, reading_b):
        return False
    if a == b:
        return True
    if reading_a is None or reading_b is None:
        return False
    return None


def same_value(reading_a: bytes, reading_b: bytes) -> bool:
    """math-verify's equivalence of two readings (the first as the gold answer)."""
    from math_verify import verify

    try:
        return bool(verify(pickle.loads(reading_a), pickle.loads(reading_b), timeout_seconds=None))
    except Exception:  # an answer we cannot compare is not equal
        return False


def equal_unguarded(a: str, b: str) -> bool:
    """Mathematical equivalence of two final answers ("1/2" == "0.5" == "\\frac{1}{2}"; nan equals nothing)."""
    a, b = normalize(a), normalize(b)
    reading_a, reading_b = reading(a), reading(b)
    verdict = settled(a, b, reading_a, reading_b)
    return same_value(reading_a, reading_b) if verdict is None else verdict


def equal_many_unguarded(pairs: Sequence[tuple[str, str]]) -> list[bool]:
    return [equal_unguarded(a, b) for a, b in pairs]


def cluster_answers(
    answers: Sequence[str | None], equal_many: Callable[[list[tuple[str, str]]], list[bool]]
) -> list[int | None]:
    """Group answers into equivalence classes; returns a class id per answer (None for no answer).

    Distinct strings are compared pairwise, each also with itself, in one batch (so the checker can
    parallelise), then merged with union-find. An answer not equal to itself (nan, 0/0) gets no class, as if
    none were given: agreeing on an undefined value is not agreeing. Class ids are numbered by first appearance.
    """
    distinct: list[str] = []
    for answer in answers:
        if answer is not None and answer not in distinct:
            distinct.append(answer)
    pairs = [(i, j) for i in range(len(distinct)) for j in range(i, len(distinct))]
    same = equal_many([(distinct[i], distinct[j]) for i, j in pairs]) if pairs else []
    defined = {i for (i, j), equal in zip(pairs, same) if i == j and equal}  # nan is not even equal to itself
    parent = list(range(len(distinct)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for (i, j), equal in zip(pairs, same):
        if equal:
            parent[max(root(i), root(j))] = min(root(i), root(j))
    class_of_root: dict[int, int] = {}
    for i in sorted(defined):
        class_of_root.setdefault(root(i), len(class_of_root))
    class_of = {answer: class_of_root[root(i)] for i, answer in enumerate(distinct) if i in defined}
    return [class_of.get(answer) for answer in answers]
