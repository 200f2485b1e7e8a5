"""Does a solution's written arithmetic hold? (`arithmetic_check`, issue 38.)

A small student's majority is mostly wrong, and mostly for a visible reason: "40 - 3 = 22". On the shipped
probe, a solution whose every `a op b = c` is true and whose answer is the result of the last one is right 6 to
36 times as often as one whose arithmetic is false (results.md, "Lever 9"). Checking it is a calculator's
job, not the students': an outside reference for each step, which agreement cannot fake.

Pure and bounded, since model output is hostile: one left-to-right pass of a tokenizer (no pattern that can
backtrack), and numbers longer than `MAX_DIGITS` or chains longer than `MAX_OPERANDS` fail the check instead of
being computed; so does a solution that writes more than `MAX_EQUATIONS`.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DIGITS = 12  # per number: 12-digit numbers, 8 of them, multiply to under 100 digits
MAX_OPERANDS = 8
MAX_EQUATIONS = 32  # a solution of a word problem writes a handful; thousands of true ones are a cost attack

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_TOKEN = re.compile(rf"{_NUMBER}|\\times|\\cdot|\\div|\\\$|[A-Za-z]+|\S")
_PLAIN_NUMBER = re.compile(rf"-?{_NUMBER}")
_GIVEN = re.compile(_NUMBER)
_MULTIPLY, _DIVIDE = {"*", "×", "x", "\\times", "\\cdot"}, {"/", "÷", "\\div"}
_OPERATORS = _MULTIPLY | _DIVIDE | {"+", "-"}
_DOLLARS = {"$", "\\$"}  # `$2 \\times 6 = 12$`, `\\$5 + \\$3 = \\$8`: read through


def arithmetic_holds(text: str, answer: str | None) -> bool:
    """True when `text` writes one to `MAX_EQUATIONS` of `a op b ... = c`, every one before its boxed answer is
    true (to the precision `c` is written with), and `answer` is the number the last one reaches."""
    if answer is None:
        return False
    target = _number(answer.replace("\\$", "").replace("$", "").strip())
    found = _written_equations(text)
    if target is None or not 0 < len(found) <= MAX_EQUATIONS:
        return False
    results = [_checked(left, right) for left, right in found]
    return None not in results and results[-1] == target


def uses_givens(text: str, problem: str) -> bool:
    """True when every number `problem` states is an operand of the `a op b ... = c` that `text` writes before its
    boxed answer. A calculator cannot see "16 * 2 = 32" for "shares 16 among 2", but it sees "40 * 10 = 400" for
    "has 40, finds 3 more": on the probe and on MAWPS, the in-band majority of checked solutions that also use
    every given is right about twice as often (results.md, "Lever 11"). Numbers past `MAX_DIGITS` are not givens
    (no equation can use them); a problem stating more numbers than the equations can hold fails."""
    written = set(_GIVEN.findall(problem))
    if len(written) > MAX_EQUATIONS * MAX_OPERANDS:
        return False
    givens = {n for n in map(_number, written) if n is not None}
    used = {_number(operand) for left, _ in _written_equations(text) for operand in left[::2]}
    return givens <= used


def counted_answer(answer: str | None, holds: bool, used_givens: bool, *, check: bool, check_givens: bool) -> str | None:
    """The answer a judge counts: `answer`, or None (no answer, so never correct) where `check` is on and the
    solution's written arithmetic does not hold, or `check_givens` is on too and it leaves a given unused."""
    return answer if not check or holds and (used_givens or not check_givens) else None


def _written_equations(text: str) -> list[tuple[list[str], str]]:
    """The equations a solution writes before its boxed answer, one past `MAX_EQUATIONS` at most."""
    body = text[: text.find("\\boxed")] if "\\boxed" in text else text
    return equations(body, MAX_EQUATIONS + 1)


def equations(text: str, most: int) -> list[tuple[list[str], str]]:
    """The first `most` of the `a op b ... = c` in `text`: each one's left side (operands and operators,
    alternating) and `c`. In a chain `2 + 3 = 5 + 4 = 9`, `5 + 4 = 9` is the next equation."""
    found: list[tuple[list[str], str]] = []
    left: list[str] = []  # the chain being read: operand, operator, operand, ...
    after_equals, sign = False, ""
    for match in _TOKEN.finditer(text):
        if len(found) == most:
            break
        token = match.group()
        is_number = token[0].isdigit()
        if token in _DOLLARS:
            continue
        if after_equals:
            if token == "-" and not sign:
                sign = "-"
                continue
            after_equals = False
            if is_number:
                found.append((left, sign + token))
                left = [sign + token]
            else:
                left = []
            sign = ""
            continue
        ends_in_number = bool(left) and left[-1] not in _OPERATORS
        if is_number and left and not ends_in_number or token in _OPERATORS and ends_in_number:
            left.append(token)
        elif is_number:
            left = [token]
        elif token == "=" and len(left) >= 3 and ends_in_number:
            after_equals = True
        else:
            left = []
    return found


def _checked(left: list[str], right: str) -> Fraction | None:
    """`right` as a number when the chain `left` computes to it (within its last written digit), else None."""
    value, written = _evaluate(left), _number(right)
    if value is None or written is None:
        return None
    decimals = len(right.partition(".")[2])
    return written if abs(value - written) <= Fraction(1, 2 * 10 ** decimals) else None


def _evaluate(tokens: list[str]) -> Fraction | None:
    """Operands and operators, alternating, with `*` and `/` before `+` and `-`; None if unreadable or too big."""
    if len(tokens) > 2 * MAX_OPERANDS - 1:
        return None
    operands, operators = [_number(t) for t in tokens[::2]], tokens[1::2]
    if None in operands:
        return None
    terms, signs = [operands[0]], [1]
    for operator, operand in zip(operators, operands[1:]):
        if operator in _MULTIPLY:
            terms[-1] *= operand
        elif operator in _DIVIDE:
            if operand == 0:
                return None
            terms[-1] /= operand
        else:
            terms.append(operand)
            signs.append(-1 if operator == "-" else 1)
    return sum(sign * term for sign, term in zip(signs, terms))


def _number(text: str) -> Fraction | None:
    digits = text.replace(",", "")
    if len(digits.lstrip("-").replace(".", "")) > MAX_DIGITS or not _PLAIN_NUMBER.fullmatch(text):
        return None
    return Fraction(digits)
