"""Parsers take untrusted model output: they must never raise, whatever the text."""

from hypothesis import given, settings
from hypothesis import strategies as st

from selfplay.roles import PromptTemplate, parse_teacher, read_answer
from selfplay.roles.teacher import TeacherProblem
from selfplay.verify import extract_final_answer

TAGS = ["<problem>", "</problem>", "<answer>", "</answer>", "<concepts>", "</concepts>", "<program>", "</program>",
        "\\boxed{", "}", "{", "<example>", "Therefore, the final answer is: $", "\n", ","]
tagged_text = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=30)), max_size=40).map("".join)


PROMPT = PromptTemplate.load("prompts/teacher.yaml").messages(problems=["What is 1 + 1?"], need_answer=True,
                                                              need_program=False)[-1]["content"]


def parse(text, need_answer=False, need_program=False):
    return parse_teacher(text, PROMPT, 10, 3, need_answer, need_program)


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
    solution = read_answer(text)
    assert solution.format_score in (0.0, 0.5, 1.0)
    assert (solution.answer is None) == (solution.format_score == 0.0)
    answer = extract_final_answer(text)
    assert answer is None or 0 < len(answer) <= 1000


def test_huge_and_binary_inputs():
    assert not parse("<problem>" * 50_000).valid
    assert not parse("\x00\xff" * 100_000).valid
    assert read_answer("\\boxed{" * 30_000).answer is None
    assert read_answer("x" * 100_000 + "\\boxed{7}").answer == "7"
