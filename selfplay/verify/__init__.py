"""Answer extraction, guarded equivalence and (optional) sandboxed execution of teacher programs."""

from selfplay.verify.answers import cluster_answers, extract_final_answer, normalize
from selfplay.verify.guard import Verifier, answers_equal

__all__ = ["Verifier", "answers_equal", "cluster_answers", "extract_final_answer", "normalize"]
