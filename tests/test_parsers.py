"""Parsers take untrusted model output: they must never raise, whatever the text."""

from hypothesis import given, settings
from hypothesis import strategies as st

from selfplay.novelty import Embedder
from selfplay.policy import EMBEDDED, load_tokenizer, tokens_in_span
from selfplay.roles import (
    PromptTemplate, concept_span, conversation, parse_teacher, read_answer, rejected_as_echo, shown_problems,
)
from selfplay.roles.teacher import TeacherProblem
from selfplay.verify import extract_final_answer

TAGS = ["<problem>", "</problem>", "<answer>", "</answer>", "<concepts>", "</concepts>", "<program>", "</program>",
        "\\boxed{", "}", "{", "<example>", "Therefore, the final answer is: $", "\n", ","]
tagged_text = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=30)), max_size=40).map("".join)


MESSAGES = PromptTemplate.load("prompts/teacher.yaml").messages(problems=["What is 1 + 1?"], need_answer=True,
                                                               need_program=False)
PROMPT, SHOWN = MESSAGES[-1]["content"], shown_problems(conversation(MESSAGES))
WORKED_EXAMPLE = "A box holds 6 rows of 5 pencils. How many pencils are in the box?"  # prompts/teacher.yaml


def parse(text, need_answer=False, need_program=False):
    return parse_teacher(text, PROMPT, SHOWN, 10, 3, need_answer, need_program)


def test_valid_completion():
    p = parse("<problem>A box holds 6 rows of 5 pencils. How many?</problem>\n<answer> 30 </answer>\n"
              "<concepts>Multiplication, counting</concepts>")
    assert p.valid and p.problem.startswith("A box") and p.answer == "30"
    assert p.concepts == ["multiplication", "counting"]


def test_invalid_reasons():
    assert parse("").reason == "no <problem> block"
    assert parse("<problem>short</problem>").reason == "problem too short"
    assert parse("<problem>What is 1 +  1?</problem>").reason.startswith("repeats its prompt")
    assert parse("<problem>outer <problem>inner text here</problem></problem>").reason == "tags inside <problem>"
    assert parse("<problem>How many legs do 3 cats have?</problem>", need_answer=True).reason == "no <answer> block"
    assert parse("<problem>" + "x" * 3000 + "</problem>").reason == "problem too long"
    assert parse("<problem>How many legs do 3 cats have?</problem>", need_program=True).reason == "no usable <program> block"


def test_repeated_blocks_take_the_first_and_concepts_are_capped():
    p = parse("<problem>First problem text here?</problem><problem>Second one text?</problem>"
              "<concepts>a, b, c, d, e</concepts>")
    assert p.problem == "First problem text here?" and p.concepts == ["a", "b", "c"]


def test_a_copy_of_the_worked_example_or_its_shown_problem_is_an_echo():
    # The worked example lives in earlier turns than the request: an echo check on the last turn alone missed it.
    for shown in (WORKED_EXAMPLE, "Tom has 3 apples and buys 4 more. How many apples does he have?"):
        assert parse(f"<problem>{shown.upper()}</problem>\n<answer>30</answer>").reason.startswith("repeats its prompt")
    assert {"What is 1 + 1?", WORKED_EXAMPLE} <= set(SHOWN)


def test_a_near_duplicate_of_a_shown_problem_is_an_echo():
    embedder = Embedder()
    paraphrase = "A box holds 6 rows of 5 pencils. How many pencils does the box hold?"
    other = "A train travels 60 km in 2 hours. What is its speed?"
    vectors = embedder.encode([WORKED_EXAMPLE, paraphrase, other])
    problem = TeacherProblem(problem=paraphrase, valid=True)
    echo = rejected_as_echo(problem, float(vectors[0] @ vectors[1]), threshold=0.95)
    assert not echo.valid and echo.reason.startswith("near-duplicate of a problem shown in its prompt (cosine 0.98")
    assert rejected_as_echo(problem, float(vectors[0] @ vectors[2]), threshold=0.95) is problem


def test_the_concepts_block_is_found_in_tokens_even_when_bpe_merges_its_edges():
    tokenizer = load_tokenizer(EMBEDDED)
    for before, after in (("\n", "\nThanks"), ("", "!"), ("x", "")):  # tags glued to neighbouring text
        text = f"<problem>How many legs do 3 cats have?</problem>{before}<concepts>multiplication, animals</concepts>{after}"
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        inside = tokens_in_span(tokenizer, ids, concept_span(tokenizer.decode(ids, skip_special_tokens=True)))
        masked = tokenizer.decode([t for t, k in zip(ids, inside) if k])
        kept = tokenizer.decode([t for t, k in zip(ids, inside) if not k])
        assert "<concepts>multiplication, animals</concepts>" in masked and "concepts" not in kept and "cats" in kept
        assert kept.endswith(tokenizer.eos_token)
    assert concept_span("<problem>no concepts here</problem>") is None


def test_echo_of_the_prompt_format_is_invalid_and_placeholders_are_not_fields():
    echo = "<problem>the new problem</problem>\n<answer>its final answer</answer>"
    assert parse(echo).reason.startswith("repeats its prompt")
    p = parse("<problem>How many legs do 3 cats have?</problem><answer>its final answer</answer>"
              "<concepts>one to three concepts, comma-separated</concepts>")
    assert p.valid and p.answer is None and p.concepts == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(tagged_text, st.text(max_size=2000), st.binary(max_size=500).map(lambda b: b.decode("latin-1"))))
def test_teacher_parser_is_total(text):
    for need_answer in (False, True):
        result = parse(text, need_answer=need_answer, need_program=need_answer)
        assert isinstance(result, TeacherProblem)
        assert result.valid == (result.reason == "")
        assert len(result.concepts) <= 3
        if result.valid:
            assert 10 <= len(result.problem) <= 2000


@settings(max_examples=300, deadline=None)
@given(st.one_of(tagged_text, st.text(max_size=2000)))
def test_student_reader_is_total(text):
    solution = read_answer(text, problem=text)
    assert solution.format_score in (0.0, 0.5, 1.0)
    assert (solution.answer is None) == (solution.format_score == 0.0)
    answer = extract_final_answer(text)
    assert answer is None or 0 < len(answer) <= 1000


def test_huge_and_binary_inputs():
    assert not parse("<problem>" * 50_000).valid
    assert not parse("\x00\xff" * 100_000).valid
    assert read_answer("\\boxed{" * 30_000, "").answer is None
    assert read_answer("x" * 100_000 + "\\boxed{7}", "").answer == "7"


HOSTILE_COMPLETIONS = {
    "openers without closers": "<problem>" * 2_500,
    "concept openers": "<concepts>" * 2_000,
    "openers and stray closers": "<problem> </" * 2_000,
    "spaced brackets": "< " * 10_000,
    "text and spaces": "\\boxed{\\text{" + " " * 30_000 + "{}}}",
    "nested braces": "\\boxed{" + "{" * 20_000,
}


def test_parsing_any_completion_costs_linear_time():
    """Model output is hostile: every parser reads 20,000 characters of the worst shapes in milliseconds (a lazy
    `<problem>(.*?)</problem>` scanned to the end from each of 2,500 openers: 0.2 s a completion)."""
    import time

    for name, text in HOSTILE_COMPLETIONS.items():
        start = time.perf_counter()
        parse(text, need_answer=True, need_program=True)
        concept_span(text)
        read_answer(text, problem=text)
        assert time.perf_counter() - start < 0.02, name
