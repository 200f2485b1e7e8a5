"""Answer checking with a hard wall-clock limit that works from any thread.

math-verify/sympy can loop or blow up on adversarial answers, and signal-based timeouts only work on the main
thread. So checks run in a pebble process pool: a task past its limit has its worker killed and replaced,
and counts as "not equal". Workers fork from a forkserver that has already imported sympy, so a
replacement starts in milliseconds and never inherits the parent's torch threads.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout

import pebble

from selfplay.verify.answers import cluster_answers, equal_many_unguarded

log = logging.getLogger(__name__)

# Pairs sent to a worker in one task: amortises inter-process overhead; a chunk that times out is retried
# pair by pair so one hostile answer costs its own limit, not its neighbours' verdicts.
CHUNK_SIZE = 16


class Verifier:
    def __init__(self, timeout: float = 5.0, workers: int = 2):
        self.timeout = timeout
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["selfplay.verify.answers", "math_verify", "sympy"])
        self._pool = pebble.ProcessPool(max_workers=workers, context=context)
        self.timeouts = 0  # checks that hit the limit (counted as not equal)
        self.failures = 0  # checks whose worker died (memory blow-up, crash): not equal

    def equal(self, a: str, b: str) -> bool:
        return self.equal_many([(a, b)])[0]

    def equal_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        pairs = [(str(a), str(b)) for a, b in pairs]
        chunks = [list(range(i, min(i + CHUNK_SIZE, len(pairs)))) for i in range(0, len(pairs), CHUNK_SIZE)]
        futures = [self._submit([pairs[k] for k in chunk]) for chunk in chunks]
        results = [False] * len(pairs)
        for chunk, future in zip(chunks, futures):
            verdicts = self._result(future)
            if verdicts is None and len(chunk) > 1:
                retries = [(k, self._submit([pairs[k]])) for k in chunk]
                verdicts = [(self._result(f) or [False])[0] for _, f in retries]
            elif verdicts is None:
                verdicts = [False]
            for k, verdict in zip(chunk, verdicts):
                results[k] = verdict
        return results

    def cluster(self, answers: Sequence[str | None]) -> list[int | None]:
        return cluster_answers(answers, self.equal_many)

    def _submit(self, pairs: list[tuple[str, str]]):
        return self._pool.schedule(equal_many_unguarded, args=(pairs,), timeout=self.timeout)

    def _result(self, future) -> list[bool] | None:
        try:
            return future.result()
        except FutureTimeout:
            self.timeouts += 1
            log.warning("answer check exceeded %.1fs; worker replaced, counted as not equal", self.timeout)
        except Exception as error:  # the worker died (e.g. memory) or raised: the verdict is "not equal"
            self.failures += 1
            log.warning("answer check failed (%s); counted as not equal", type(error).__name__)
        return None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: Verifier | None = None


def answers_equal(a: str, b: str) -> bool:
    """Are two final answers mathematically equal? Strings in, a bool out, within the time limit whatever the input.

    Uses a process-wide verifier with the default 5 s limit; runs and evaluations build their own
    `Verifier` from the config instead.
    """
    global _default
    if _default is None:
        _default = Verifier()
        atexit.register(_default.close)
    return _default.equal(a, b)
