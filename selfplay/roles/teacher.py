"""Teacher role: prompt from pool problems; parse a completion into a candidate problem.

The parser is total: any string (empty, binary, 100k characters, nested or repeated tags, an echo of the
prompt) gives a `TeacherProblem`, valid or with the reason it is not. Nothing here raises on model output.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from selfplay.novelty import is_near_duplicate
from selfplay.verify.answers import normalize

MAX_PROBLEM_CHARS = 2000
MAX_ANSWER_CHARS = 200
MAX_PROGRAM_CHARS = 4000
# Parsing looks at this much of a completion; a longer one is a runaway generation, not a problem.
MAX_SCAN_CHARS = 20_000
_TAG = re.compile(r"</?\s*(problem|answer|concepts|program|example)\s*>", re.IGNORECASE)


@dataclass
class TeacherProblem:
    problem: str | None = None
    answer: str | None = None
    concepts: list[str] = field(default_factory=list)
    program: str | None = None
    valid: bool = False
    reason: str = ""  # why it is invalid ("" when valid)

    @property
    def has_problem(self) -> bool:
        return self.problem is not None

    @property
    def has_answer(self) -> bool:
        return self.answer is not None

    @property
    def has_concepts(self) -> bool:
        return bool(self.concepts)


def _block_span(text: str, tag: str) -> tuple[int, int, int, int] | None:
    """(start, end) of the first complete <tag>...</tag> and (start, end) of its content, or None.
    Case-insensitive. The first opener, then the first closer after it: the lazy `<tag>(.*?)</tag>` finds the
    same block, but scans to the end from every opener (a completion of 2,000 openers took 0.2 s)."""
    opener = re.search(rf"<\s*{tag}\s*>", text, re.IGNORECASE)
    closer = opener and re.compile(rf"<\s*/\s*{tag}\s*>", re.IGNORECASE).search(text, opener.end())
    return (opener.start(), closer.end(), opener.end(), closer.start()) if closer else None


def _block(text: str, tag: str) -> str | None:
    """Content of the first complete <tag>...</tag>, or None. Case-insensitive; whitespace trimmed."""
    span = _block_span(text, tag)
    return text[span[2]: span[3]].strip() if span else None


_BLOCKS = re.compile(r"<\s*(\w+)\s*>(.*?)<\s*/\s*\1\s*>", re.DOTALL)


def prompt_blocks(request: str) -> set[str]:
    """Normalised contents of every tagged block in the teacher's request: the problems it was shown and the
    format placeholders ("the new problem", "its final answer"). A field repeating one verbatim is an echo."""
    return {normalize_text(m.group(2)) for m in _BLOCKS.finditer(request)}


def shown_problems(prompt_text: str) -> list[str]:
    """The problems a teacher prompt shows (its <example> and <problem> blocks, in every turn), to which a new
    problem must not be a near-duplicate."""
    return list(dict.fromkeys(m.group(2).strip() for m in _BLOCKS.finditer(prompt_text)
                              if m.group(1).lower() in ("example", "problem")))


def concept_span(completion: str) -> tuple[int, int] | None:
    """Character span of the first complete <concepts>...</concepts> block, tags included (the parser reads the
    same block). The reference keeps these tokens out of the loss: concepts label a problem, they are not it."""
    span = _block_span(completion[:MAX_SCAN_CHARS], "concepts")
    return span[:2] if span else None


def required_blocks(reference_answer: str) -> dict[str, bool]:
    """What a teacher's completion must carry under a reference mode, as `need_answer` and `need_program`: the
    prompt (`PromptTemplate.messages`) asks for it and `parse_teacher` requires it."""
    return {"need_answer": reference_answer != "majority", "need_program": reference_answer == "program"}


def parse_teacher(
    completion: str,
    request: str,
    shown: list[str],
    min_problem_chars: int,
    max_concepts: int,
    need_answer: bool,
    need_program: bool,
) -> TeacherProblem:
    text = completion[:MAX_SCAN_CHARS].replace("\x00", "")
    problem, answer = _block(text, "problem"), _block(text, "answer")
    concepts_text, program = _block(text, "concepts"), _block(text, "program")
    echoes = prompt_blocks(request)
    concepts = []
    if concepts_text and "\n" not in concepts_text and not _TAG.search(concepts_text) and normalize_text(concepts_text) not in echoes:
        concepts = [c.strip().lower() for c in concepts_text.split(",") if c.strip()][:max_concepts]
    if answer is not None and (
        len(answer) > MAX_ANSWER_CHARS or _TAG.search(answer) or not normalize(answer) or normalize_text(answer) in echoes
    ):
        answer = None
    result = TeacherProblem(problem=problem, answer=answer or None, concepts=concepts, program=program)

    def invalid(reason: str) -> TeacherProblem:
        result.reason = reason
        return result

    if problem is None:
        return invalid("no <problem> block")
    if _TAG.search(problem):
        return invalid("tags inside <problem>")
    if len(problem) < min_problem_chars or set(problem) <= set(". "):
        return invalid("problem too short")
    if len(problem) > MAX_PROBLEM_CHARS:
        return invalid("problem too long")
    if normalize_text(problem) in echoes | {normalize_text(s) for s in shown}:
        return invalid("repeats its prompt (a shown problem or the format's placeholder)")
    if need_answer and result.answer is None:
        return invalid("no <answer> block")
    if need_program and (program is None or len(program) > MAX_PROGRAM_CHARS):
        return invalid("no usable <program> block")
    result.valid = True
    return result


def parse_restatement(completion: str, original: str, min_problem_chars: int) -> str | None:
    """The problem of a restatement (two_route): its first <problem> block, or None where there is none, it is
    too short or too long, carries tags, or repeats the original word for word (one route, twice)."""
    text = _block(completion[:MAX_SCAN_CHARS].replace("\x00", ""), "problem")
    if text is None or _TAG.search(text) or not min_problem_chars <= len(text) <= MAX_PROBLEM_CHARS:
        return None
    return None if normalize_text(text) == normalize_text(original) else text


def with_program_output(problem: TeacherProblem, output: str | None, status: str) -> TeacherProblem:
    """Program mode: the output of the teacher's program (run in the sandbox) becomes the problem's claimed
    answer; a program that printed no answer makes the problem invalid, with its status as the reason."""
    if output is None:
        return dataclasses.replace(problem, valid=False, reason=f"program failed: {status}")
    return dataclasses.replace(problem, answer=output)


def rejected_as_echo(problem: TeacherProblem, similarity: float, threshold: float) -> TeacherProblem:
    """A valid problem whose embedding is a near-duplicate (cosine >= `threshold`) of a problem shown in its
    own prompt is an echo: invalid, with the similarity in its reason."""
    if not problem.valid or not is_near_duplicate(similarity, threshold):
        return problem
    return dataclasses.replace(problem, valid=False,
                               reason=f"near-duplicate of a problem shown in its prompt (cosine {similarity:.3f})")


def normalize_text(text: str) -> str:
    """Case- and whitespace-insensitive form used to spot verbatim copies and duplicate seeds."""
    return " ".join(text.lower().split())
