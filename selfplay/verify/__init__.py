"""Answer extraction, guarded equivalence, judging a problem's answers, and the sandbox for teacher programs."""

from selfplay.verify.answers import cluster_answers, extract_final_answer, normalize
from selfplay.verify.guard import Verifier, answers_equal
from selfplay.verify.judge import Judgement, judge, judge_all, judge_routes

__all__ = ["Judgement", "Verifier", "answers_equal", "cluster_answers", "extract_final_answer", "judge", "judge_all", "judge_routes",
           "normalize"]
