"""Answer checking with a hard wall-clock limit that works from any thread.

math-verify/sympy can loop or blow up on adversarial answers ("10^{10^{10}}" computes a ten-billion-digit
number while parsing), in C code that no signal interrupts, and signal-based timeouts only work on the main
thread anyway. So checks run in a pebble process pool: a task past its limit has its worker killed and replaced,
and counts as "not equal". Workers fork from a forkserver that has already imported sympy, so a replacement
starts in milliseconds and never inherits the parent's torch threads, and each runs under a memory limit.

A call checks in two rounds, so that a hostile answer costs one limit, not one per pair it is in:
1. every distinct answer is read (parsed) once, each in its own task under the limit;
2. only pairs whose verdict the readings leave open are compared, in chunks, with the readings shipped along;
   a chunk past the limit is retried pair by pair within one more limit.
An answer whose parsing or evaluation hangs thus costs one limit; a pair whose comparison alone hangs, two.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import resource
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout

import pebble

from selfplay.verify.answers import UNDEFINED, Reading, cluster_answers, normalize, reading, same_value, settled

log = logging.getLogger(__name__)

# Comparisons sent to a worker in one task: amortises inter-process overhead; a chunk that times out is retried
# pair by pair (in parallel) so one hostile pair costs its own limit, not its neighbours' verdicts.
CHUNK_SIZE = 16
WORKER_MEMORY_MB = 1024  # address space of a checking worker; a reading past it is a MemoryError, not a host OOM


def _limit_memory(megabytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))


def _compare_many(pairs: list[tuple[bytes, bytes]]) -> list[bool]:
    return [same_value(a, b) for a, b in pairs]


class Verifier:
    def __init__(self, timeout: float = 5.0, workers: int = 2):
        self.timeout = timeout
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["selfplay.verify.answers", "math_verify", "sympy"])
        self._pool = pebble.ProcessPool(max_workers=workers, context=context, initializer=_limit_memory,
                                        initargs=(WORKER_MEMORY_MB,))
        self.timeouts = 0  # tasks that hit the limit (their answers unreadable, their pairs not equal)
        self.failures = 0  # tasks whose worker died (a crash): likewise

    def equal(self, a: str, b: str) -> bool:
        return self.equal_many([(a, b)])[0]

    def equal_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        pairs = [(normalize(str(a)), normalize(str(b))) for a, b in pairs]
        readings = self._read(list(dict.fromkeys(answer for pair in pairs for answer in pair)))
        verdicts = [settled(a, b, readings[a], readings[b]) for a, b in pairs]
        open_pairs = [k for k, verdict in enumerate(verdicts) if verdict is None]
        for k, verdict in zip(open_pairs, self._compare([(readings[pairs[k][0]], readings[pairs[k][1]])
                                                         for k in open_pairs])):
            verdicts[k] = verdict
        return verdicts

    def cluster(self, answers: Sequence[str | None]) -> list[int | None]:
        return cluster_answers(answers, self.equal_many)

    def _read(self, answers: list[str]) -> dict[str, Reading]:
        """Round 1: each answer read once, in its own task, all at once. One that cannot be read within the limit
        is equal to nothing, not even to the same string: it is more likely an attack than an answer."""
        futures = [self._pool.schedule(reading, args=(answer,), timeout=self.timeout) for answer in answers]
        return {answer: self._result(future, UNDEFINED) for answer, future in zip(answers, futures)}

    def _compare(self, pairs: list[tuple[bytes, bytes]]) -> list[bool]:
        """Round 2: comparisons of readings, in chunks; a chunk that fails is retried pair by pair."""
        chunks = [pairs[i: i + CHUNK_SIZE] for i in range(0, len(pairs), CHUNK_SIZE)]
        futures = [self._pool.schedule(_compare_many, args=(chunk,), timeout=self.timeout) for chunk in chunks]
        results: list[bool] = []
        for chunk, future in zip(chunks, futures):
            verdicts = self._result(future, None)
            if verdicts is None and len(chunk) == 1:
                verdicts = [False]
            elif verdicts is None:  # pair by pair, all within one more limit: a hostile pair costs no more
                deadline = time.monotonic() + self.timeout
                retries = [self._pool.schedule(_compare_many, args=([pair],), timeout=self.timeout) for pair in chunk]
                verdicts = [self._result(retry, [False], deadline)[0] for retry in retries]
            results.extend(verdicts)
        return results

    def _result(self, future, failed, deadline: float | None = None):
        """The task's value, or `failed` if it timed out, died, or is not done by `deadline` (then cancelled,
        which kills its worker)."""
        try:
            return future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            self.timeouts += 1
            log.warning("answer check exceeded %.1fs; worker replaced, counted as not equal", self.timeout)
        except Exception as error:  # the worker died (e.g. a crash) or raised: the verdict is "not equal"
            self.failures += 1
            log.warning("answer check failed (%s); counted as not equal", type(error).__name__)
        return failed

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
