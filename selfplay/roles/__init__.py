"""Teacher and student roles: prompts (templates from prompts/) and parsing of completions."""

from selfplay.roles.student import StudentSolution, read_solution
from selfplay.roles.teacher import TeacherProblem, normalize_text, parse_teacher
from selfplay.roles.templates import PromptTemplate

__all__ = ["PromptTemplate", "StudentSolution", "TeacherProblem", "normalize_text", "parse_teacher", "read_solution"]
