"""Teacher and student roles: prompts (templates from prompts/) and parsing of completions."""

from selfplay.roles.student import StudentAnswer, read_answer
from selfplay.roles.teacher import TeacherProblem, normalize_text, parse_teacher, with_program_output
from selfplay.roles.templates import PromptTemplate

__all__ = ["PromptTemplate", "StudentAnswer", "TeacherProblem", "normalize_text", "parse_teacher", "read_answer",
           "with_program_output"]
