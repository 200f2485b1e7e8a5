"""Teacher and student roles: prompts (templates from prompts/) and parsing of completions."""

from selfplay.roles.student import StudentAnswer, read_answer
from selfplay.roles.teacher import (
    TeacherProblem, concept_span, normalize_text, parse_restatement, parse_teacher, rejected_as_echo, required_blocks,
    shown_problems, with_program_output,
)
from selfplay.roles.templates import PromptTemplate, conversation

__all__ = ["PromptTemplate", "StudentAnswer", "TeacherProblem", "concept_span", "conversation", "normalize_text",
           "parse_restatement", "parse_teacher", "read_answer", "rejected_as_echo", "required_blocks", "shown_problems",
           "with_program_output"]
