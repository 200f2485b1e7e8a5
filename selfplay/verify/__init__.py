"""Answer extraction, guarded equivalence, judging a problem's answers, and the sandbox for teacher programs."""

from selfplay.verify.answers import cluster_answers, extract_final_answer, normalize
from selfplay.verify.guard import Verifier, answers_equal
from selfplay.verify.judge import Judgement, judge

__all__ = ["Judgement", "Verifier", "answers_equal", "cluster_answers", "extract_final_answer", "judge", "normalize"]
