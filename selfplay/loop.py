"""One self-play step, phase by phase, in the order of the data flow:

    one or more generation rounds (`rounds_per_update`), each:
        pool --sample--> teacher prompts --generate--> completions --parse--> candidate problems (valid or not)
        valid problems --embed--> echoes of a problem shown in their own prompt made invalid
        valid problems --generate--> student solutions --judge--> reference answer, correctness, solve rate
        valid problems --FAISS archive--> novelty, and repeats of archived problems
        score: reward terms per role --> training rows with role-specific advantages (groups within the round)
        every valid problem --> novelty archive;  admitted problems --> pool (what the next round is shown)
    the rounds' rows --> one policy update --> the sampler takes the new weights
    every problem --> curriculum.jsonl;  figures --> metrics.jsonl

Every phase is timed into metrics.jsonl as `time/<phase>` (summed over the step's rounds). The rules each phase
applies live in their rooms (`roles/` parse, `verify/judge.py`, `rewards.py`, `train/rows.py`,
`curriculum/pool.py`); this file only moves data between them. Building a run and checkpointing it is
`runner.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from selfplay import rewards
from selfplay.config import SelfPlayConfig
from selfplay.curriculum.pool import Pool, eligible
from selfplay.distributed import Ranks
from selfplay.errors import SelfPlayError
from selfplay.files import append_jsonl
from selfplay.novelty import Archive, Embedder, is_near_duplicate, nearest_archived, novelty_scores
from selfplay.policy import GenerationBackend, Sample, Sampling, render_chat, tokens_in_span
from selfplay.rewards import StudentTerms, TeacherTerms
from selfplay.roles import (
    PromptTemplate, TeacherProblem, concept_span, conversation, parse_restatement, parse_teacher, read_answer,
    rejected_as_echo,
    required_blocks, shown_problems, with_program_output,
)
from selfplay.rundir import CURRICULUM, METRICS
from selfplay.train.rows import Scored, StepRows, step_rows
from selfplay.train.updater import Updater
from selfplay.verify import Verifier, judge_all, judge_routes
from selfplay.verify.arithmetic import counted_answer
from selfplay.verify.sandbox import run_program

log = logging.getLogger(__name__)

# Phases whose time is generation or forward/backward; everything else is overhead (bench_step.py).
GENERATION_PHASES = ("teacher_generate", "student_generate")
TRAINING_PHASES = ("update",)


class RunStalled(SelfPlayError):
    """Too many consecutive steps without a single valid teacher problem."""


# ---------------------------------------------------------------- the step's data, field groups by the phase that fills them
@dataclass
class Solution:
    """One student completion of a valid problem."""

    sample: Sample  # solve
    answer: str | None  # solve: the final answer it commits to
    format_score: float  # solve
    arithmetic_holds: bool = False  # solve: its written arithmetic is true and reaches its answer
    uses_givens: bool = False  # solve: its written arithmetic uses every number the problem states
    correct: bool = False  # judge
    terms: StudentTerms | None = None  # score
    reward: float | None = None  # score


@dataclass
class Candidate:
    """One teacher completion and what each phase learns about it; None means "not computed yet"."""

    teacher_prompt: int  # generate: index of the teacher prompt it came from (its advantage group)
    sample: Sample  # generate
    problem: TeacherProblem  # parse (program mode: the program's output becomes the claimed answer); echoes
    embedding: np.ndarray | None = None  # echoes (valid problems only)
    solutions: list[Solution] = field(default_factory=list)  # solve (valid problems only)
    restated: str | None = None  # solve (two_route): the policy's restatement of the problem
    restated_solutions: list[Solution] = field(default_factory=list)  # solve (two_route): the students' to it
    reference: str | None = None  # judge
    solve_rate: float | None = None  # judge
    novelty: float | None = None  # novelty
    nearest: float | None = None  # novelty: cosine to the nearest archived problem
    derived: bool | None = None  # score: is the reference computed from the problem (rewards.answer_derived)
    terms: TeacherTerms | None = None  # score
    reward: float | None = None  # score
    admitted: bool = False  # pool

    @property
    def valid(self) -> bool:
        return self.problem.valid


@dataclass(frozen=True)
class TeacherPrompt:
    ids: list[int]
    request: str  # the text of its last user turn, to recognise echoes of its format
    shown: list[str]  # the problems it shows in any turn (worked example included), to recognise copies of them


@dataclass
class Generated:
    """A round's teacher prompts and what the policy wrote for them, from every rank: teacher completions parsed
    (program mode: programs run), echoes rejected, the students' solutions. All a round needs from the sampler."""

    prompts: list[TeacherPrompt]
    candidates: list[Candidate]
    sampler_version: int  # optimizer updates the sampler's weights had taken
    seconds: dict[str, float]  # time per generation phase (run beside the previous step when pipelined)
    anchors: list[Candidate] = field(default_factory=list)  # known-answer problems the students solved (anchor_share)


@dataclass(frozen=True)
class Ahead:
    """The next step's rounds, written in the background (`SelfPlay.generate_ahead`)."""

    prompts: list[list[TeacherPrompt]]  # per round
    sampler_version: int
    written: Future  # -> per round, (this rank's candidates, seconds per phase)


@dataclass
class Round:
    """One generation round of a step: what the teacher was shown, what it wrote, and the rows it gives."""

    generated: Generated
    rows: StepRows

    @property
    def prompts(self) -> list[TeacherPrompt]:
        return self.generated.prompts

    @property
    def candidates(self) -> list[Candidate]:
        return self.generated.candidates

    @property
    def valid(self) -> list[Candidate]:
        return [c for c in self.candidates if c.valid]


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, seconds: dict[str, float]) -> None:
        for phase, value in seconds.items():
            self.seconds[phase] = self.seconds.get(phase, 0.0) + value

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class SelfPlay:
    """The parts a run is made of (built once by `runner.build`) and the step's phases over them."""

    config: SelfPlayConfig
    run_dir: Path
    model: object
    tokenizer: object
    backend: GenerationBackend
    embedder: Embedder
    verifier: Verifier
    pool: Pool  # what the teacher is shown: admitted problems (and the seeds)
    archive: Archive  # what novelty is measured against: every valid problem so far (and the seeds)
    updater: Updater
    teacher_template: PromptTemplate
    student_template: PromptTemplate
    rng: np.random.Generator  # the same stream on every rank: what the teacher is shown must agree
    ranks: Ranks  # in a multi-process run, generation and checks are split across ranks (distributed.py)
    restate_template: PromptTemplate | None = None  # reference_answer: two_route
    heldout: list = field(default_factory=list)  # benchmark items for in-run evaluation (eval_every > 0)
    probe: list = field(default_factory=list)  # known-answer problems (SeedProblem) for the probe (probe_every > 0)
    anchors: list = field(default_factory=list)  # seeds with answers, for known-answer anchors (anchor_share > 0)
    anchors_drawn: int = 0
    step: int = 0
    empty_steps: int = 0
    updates: int = 0  # optimizer updates applied: the version of the weights, the sampler's once synced
    sampler_version: int = 0
    log_file: logging.Handler | None = None  # the run's log file (logs.py), while the run is in this process
    ahead: Ahead | None = None  # async_generation: the next step's rounds, being written beside this step
    ready: list[Generated] | None = None  # ... and once written, gathered

    # ---------------------------------------------------------------- one step
    def run_step(self) -> dict:
        self.step += 1
        config, timer = self.config, PhaseTimer()
        step_start, timeouts_before = time.perf_counter(), self.verifier.timeouts
        if not len(self.pool):
            return self.skip_step("the pool is empty")
        if config.async_generation:  # this step's rounds were written beside the last step; the next step's start
            with timer("generation_wait"):
                generated = self.ready or [self.generate_round(*self.draw_round())
                                           for _ in range(config.rounds_per_update)]
            self.ready = None
            self.generate_ahead()
            rounds = [self.judge_round(k, g, timer) for k, g in enumerate(generated)]
        else:  # each round draws from the pool the round before it grew
            rounds = [self.judge_round(k, self.generate_round(*self.draw_round()), timer)
                      for k in range(config.rounds_per_update)]
        rows = StepRows.join([played.rows for played in rounds])
        update_stats, updates_before = {}, self.updates
        if rows.rows:
            with timer("update"):
                update_stats = self.updater.step(rows.rows)
            self.updates += 1
        else:
            self.updater.skip()
            log.warning("step %d: every group has zero reward variance; no update", self.step)
        with timer("generation_wait"):
            self.gather_ahead()  # the sampler must be idle to take new weights
        if rows.rows:
            with timer("sync"):
                self.backend.sync(self.model)
            self.sampler_version = self.updates
        digest = None
        if self.ranks.world > 1:
            with timer("ranks_agree"):
                digest = self.check_ranks_agree(rounds)
        measured = {}
        if self.heldout and self.step % config.eval_every == 0:
            with timer("eval"):
                measured |= self.evaluate_heldout()
        if self.probe and self.step % config.probe_every == 0:
            with timer("probe"):
                measured |= self.measure_probe()
        with timer("log"):
            metrics = self.step_metrics(rounds, rows, update_stats, updates_before) | measured
            metrics["verify/timeouts"] = sum(self.ranks.gather([self.verifier.timeouts - timeouts_before]))
            if digest is not None:
                metrics["ranks/digest"] = digest
            if self.ranks.is_main:
                append_jsonl(self.run_dir / CURRICULUM, [self.curriculum_record(c, k) for k, played in
                                                         enumerate(rounds) for c in played.candidates])
        for played in rounds:
            timer.add(played.generated.seconds)
        metrics.update({f"time/{phase}": seconds for phase, seconds in timer.seconds.items()})
        metrics["time/step"] = time.perf_counter() - step_start
        if self.ranks.is_main:
            append_jsonl(self.run_dir / METRICS, [metrics])
        self.empty_steps = 0 if any(played.valid for played in rounds) else self.empty_steps + 1
        self.check_stalled()
        return metrics

    def draw_round(self) -> tuple[list[TeacherPrompt], list]:
        """What a round starts from, drawn where the run's RNG and counters live: the teacher's prompts, and the
        known-answer anchors added to its students' groups (`anchor_share`: seeds with answers, taken in turn)."""
        prompts = self.prompt_teacher()
        count = round(self.config.anchor_share * self.config.teacher_prompts * self.config.teacher_samples)
        anchors = [self.anchors[(self.anchors_drawn + i) % len(self.anchors)] for i in range(count)] \
            if self.anchors else []
        self.anchors_drawn += len(anchors)
        return prompts, anchors

    def generate_round(self, prompts: list[TeacherPrompt], anchors: list) -> Generated:
        """The sampler's part of a round, on this rank's share of the prompts, then gathered from every rank."""
        timer = PhaseTimer()
        written = self.write(prompts, anchors, timer)
        with timer("gather"):
            candidates, solved_anchors = self.gather_written(written)
        return Generated(prompts, candidates, self.sampler_version, timer.seconds, solved_anchors)

    def gather_written(self, written: tuple[list[Candidate], list[Candidate]]) -> tuple[list, list]:
        every = self.ranks.gather([written])
        return [c for mine, _ in every for c in mine], [a for _, anchors in every for a in anchors]

    def write(self, prompts: list[TeacherPrompt], anchors: list, timer: PhaseTimer
              ) -> tuple[list[Candidate], list[Candidate]]:
        """This rank's share of the teacher prompts: completions, parsed (programs run), echoes rejected, the
        valid problems solved; and of the anchors, solved with them. No collective, so that it can run beside the
        step before it."""
        config, share = self.config, self.ranks.share(len(prompts))
        with timer("teacher_generate"):
            completions = self.backend.generate([prompts[p].ids for p in share], config.teacher_samples,
                                                config.teacher_max_new_tokens) if share else []
        with timer("parse"):
            candidates = self.parse(completions, prompts, share)
            if config.reference_answer == "program":
                self.run_programs([c for c in candidates if c.valid])
        with timer("echoes"):
            self.reject_echoes([c for c in candidates if c.valid], prompts)
        valid = [c for c in candidates if c.valid]
        mine = [Candidate(-1, None, TeacherProblem(problem=anchors[i].problem, answer=anchors[i].answer, valid=True))
                for i in self.ranks.share(len(anchors))]
        if valid or mine:
            with timer("student_generate"):
                self.solve(valid + mine, restate=valid if config.reference_answer == "two_route" else [])
        return candidates, mine

    def generate_ahead(self) -> None:
        """Pipelined: the next step's prompts are drawn now, from the pool as it stands before this step's
        admissions (every round of that step from it), and its rounds are written in the background by the
        weights of this step's start, while this step is judged and trained: one optimizer step behind."""
        draws = [self.draw_round() for _ in range(self.config.rounds_per_update)]
        worker = ThreadPoolExecutor(max_workers=1)

        def write_all() -> list[tuple[tuple, dict]]:
            written = []
            for prompts, anchors in draws:
                timer = PhaseTimer()
                written.append((self.write(prompts, anchors, timer), timer.seconds))
            return written

        self.ahead = Ahead([p for p, _ in draws], self.sampler_version, worker.submit(write_all))
        worker.shutdown(wait=False)

    def gather_ahead(self) -> None:
        """Wait for the background rounds and gather them from every rank (a collective: here, not in the thread)."""
        if self.ahead is None:
            return
        ahead, self.ahead = self.ahead, None
        self.ready = []
        for prompts, (written, seconds) in zip(ahead.prompts, ahead.written.result()):
            candidates, anchors = self.gather_written(written)
            self.ready.append(Generated(prompts, candidates, ahead.sampler_version, seconds, anchors))

    def judge_round(self, k: int, generated: Generated, timer: PhaseTimer) -> Round:
        """The rest of a round: answers judged, novelty and repeats measured, rewards and rows, then the pool
        grows, so that the next round draws from it."""
        candidates, anchors = generated.candidates, generated.anchors
        valid = [c for c in candidates if c.valid]
        with timer("verify"):
            self.judge(valid)
            self.judge(anchors, "teacher")  # an anchor's seed answer is its claim: the reference
        if valid:
            with timer("novelty"):
                self.measure_novelty(valid)
        else:
            log.warning("step %d, round %d: no valid teacher problem; students skipped", self.step, k + 1)
        with timer("rewards"):
            self.score(candidates)
            self.score_students(anchors, trusted=True)
            rows = self.training_rows(candidates, anchors)
        with timer("pool"):
            self.grow_pool(valid)
        return Round(generated, rows)

    # ---------------------------------------------------------------- phases, in step order
    def prompt_teacher(self) -> list[TeacherPrompt]:
        config, prompts = self.config, []
        anchored = round(config.seed_share * config.teacher_prompts)  # prompts that show seeds
        for p in range(config.teacher_prompts):
            shown = [e["problem"] for e in self.pool.sample(self.rng, config.teacher_examples, p < anchored)]
            messages = self.teacher_template.messages(problems=shown, **required_blocks(config.reference_answer))
            prompts.append(TeacherPrompt(render_chat(self.tokenizer, messages), messages[-1]["content"],
                                         shown_problems(conversation(messages))))
        return prompts

    def parse(self, completions: list[list[Sample]], prompts: list[TeacherPrompt], share: range) -> list[Candidate]:
        """`completions`: those of the prompts `share` (indices into `prompts`)."""
        config = self.config
        return [
            Candidate(p, sample, parse_teacher(sample.text, prompts[p].request, prompts[p].shown,
                                               config.min_problem_chars, config.max_concepts,
                                               **required_blocks(config.reference_answer)))
            for p, group in zip(share, completions)
            for sample in group
        ]

    def run_programs(self, candidates: list[Candidate]) -> None:
        """Program mode: the teacher's program, run in the sandbox, supplies the claimed answer. Programs run
        side by side, as many at once as there are verifier workers (each is a process under its own limits)."""
        config = self.config

        with ThreadPoolExecutor(max_workers=config.verify_workers) as workers:
            results = list(workers.map(
                lambda c: run_program(c.problem.program, config.program_timeout, config.program_memory_mb), candidates))
        for c, result in zip(candidates, results):
            c.problem = with_program_output(c.problem, result.answer, result.status)

    def reject_echoes(self, candidates: list[Candidate], prompts: list[TeacherPrompt]) -> None:
        """Embed the valid problems; one that is a near-duplicate of a problem its own prompt showed is invalid."""
        if not candidates:
            return
        shown = sorted({text for c in candidates for text in prompts[c.teacher_prompt].shown})
        vectors = self.embedder.encode([c.problem.problem for c in candidates] + shown)
        problems, shown_vectors = vectors[: len(candidates)], dict(zip(shown, vectors[len(candidates):]))
        for c, vector in zip(candidates, problems):
            similarity = max((float(vector @ shown_vectors[text]) for text in prompts[c.teacher_prompt].shown),
                             default=-1.0)
            c.embedding, c.problem = vector, rejected_as_echo(c.problem, similarity, self.config.dedup_threshold)

    def solve(self, candidates: list[Candidate], restate: list[Candidate] = ()) -> None:
        """The students' solutions to each candidate; for those of `restate` (two_route) the policy restates the
        problem first, and the students solve the restatement too, in the same generation call."""
        if restate:
            self.restate(restate)
        restated = [c for c in restate if c.restated]
        problems = [c.problem.problem for c in candidates] + [c.restated for c in restated]
        prompts = [render_chat(self.tokenizer, self.student_template.messages(problem=p)) for p in problems]
        groups = self.backend.generate(prompts, self.config.student_samples, self.config.student_max_new_tokens)
        for c, group in zip(candidates, groups):
            c.solutions = [_solution(sample, c.problem.problem) for sample in group]
        for c, group in zip(restated, groups[len(candidates):]):
            c.restated_solutions = [_solution(sample, c.restated) for sample in group]

    def restate(self, candidates: list[Candidate]) -> None:
        """Two-route: the policy's restatement of each problem (None where it wrote none the parser accepts)."""
        prompts = [render_chat(self.tokenizer, self.restate_template.messages(problem=c.problem.problem))
                   for c in candidates]
        for c, group in zip(candidates, self.backend.generate(prompts, 1, self.config.teacher_max_new_tokens)):
            c.restated = parse_restatement(group[0].text, c.problem.problem, self.config.min_problem_chars)

    def judge(self, candidates: list[Candidate], mode: str | None = None) -> None:
        """Reference, correctness and solve rate of each candidate, by `mode` (the run's reference_answer)."""
        if not candidates:
            return
        mode = mode or self.config.reference_answer
        counted = self.counted_answers
        if mode == "two_route":
            verdicts = self.ranks.map(lambda mine: judge_routes(
                [(counted(c.solutions), counted(c.restated_solutions)) for c in mine], self.verifier.equal_many),
                candidates)
        else:
            verdicts = self.ranks.map(lambda mine: judge_all(
                [(counted(c.solutions), c.problem.answer) for c in mine], mode, self.verifier.equal_many), candidates)
        for c, verdict in zip(candidates, verdicts):
            for solution, correct in zip(c.solutions, verdict.correct):
                solution.correct = correct
            c.reference, c.solve_rate = verdict.reference, verdict.solve_rate

    def counted_answers(self, solutions: list[Solution]) -> list[str | None]:
        """The answers judged (`counted_answer`, under the run's `arithmetic_check` and `arithmetic_uses_givens`)."""
        return [counted_answer(s.answer, s.arithmetic_holds, s.uses_givens, check=self.config.arithmetic_check,
                               check_givens=self.config.arithmetic_uses_givens) for s in solutions]

    def measure_novelty(self, candidates: list[Candidate]) -> None:
        vectors = np.stack([c.embedding for c in candidates])
        scores = novelty_scores(vectors, self.archive, self.config.novelty_top_k)
        for c, score, nearest in zip(candidates, scores, nearest_archived(vectors, self.archive)):
            c.novelty, c.nearest = score, nearest

    def score(self, candidates: list[Candidate]) -> None:
        config = self.config
        teacher_weights = rewards.TeacherWeights(config.w_solvability, config.w_novelty, config.w_teacher_format,
                                                 config.w_length)
        for c in candidates:
            p = c.problem
            fmt = rewards.teacher_format(p.has_problem, p.has_answer, p.has_concepts)
            if not c.valid:  # no text to read numbers from, never solved or embedded: only its format counts
                c.terms = TeacherTerms(format=fmt)
                c.reward = c.terms.total(teacher_weights)
                continue
            c.derived = rewards.answer_derived(p.problem, c.reference)
            repeat = self.repeats_archive(c)
            confident = rewards.confident(c.solve_rate, config.min_majority_share)
            pays = rewards.band_pays(c.solve_rate, config.band_low, config.band_high, repeat,
                                     confident and (c.derived or not config.solvability_requires_derived))
            c.terms = TeacherTerms(
                format=fmt,
                solvability=rewards.solvability(c.solve_rate, config.student_samples, config.band_low,
                                                config.band_high) if pays else 0.0,
                novelty=0.0 if repeat else c.novelty,
                length=rewards.length_term([len(s.sample.completion_ids) for s in c.solutions], config.length_cap)
                if pays else 0.0,
            )
            c.reward = c.terms.total(teacher_weights)
            self.score_students([c], confident)

    def score_students(self, candidates: list[Candidate], trusted: bool) -> None:
        """Each solution's terms: correct (against a `trusted` reference only) and format."""
        weights = rewards.StudentWeights(self.config.w_correct, self.config.w_student_format)
        for c in candidates:
            for s in c.solutions:
                s.terms = StudentTerms(correct=float(s.correct and trusted), format=s.format_score)
                s.reward = s.terms.total(weights)

    def repeats_archive(self, c: Candidate) -> bool:
        return c.nearest is not None and is_near_duplicate(c.nearest, self.config.dedup_threshold)

    def training_rows(self, candidates: list[Candidate], anchors: list[Candidate] = ()) -> StepRows:
        """Teacher groups are teacher prompts; student groups are problems (keyed by candidate index), and the
        anchors' (which no selection drops). Where the band requires a derived answer, a problem without one
        trains no student either: its students would be paid for copying a number the problem states."""
        trains_students = {k for k, c in enumerate(candidates) if c.valid and (
            c.derived or not self.config.solvability_requires_derived)}
        teacher = [Scored(c.teacher_prompt, c.sample.prompt_ids, c.sample.completion_ids, c.sample.logprobs, c.reward,
                          self.concept_mask(c.sample.completion_ids) if self.config.mask_concepts else None,
                          c.sample.finished)
                   for c in candidates]
        student = [Scored(k, s.sample.prompt_ids, s.sample.completion_ids, s.sample.logprobs, s.reward,
                          finished=s.sample.finished)
                   for k, c in enumerate(candidates) if k in trains_students for s in c.solutions]
        problem_scores = {k: candidates[k].terms.solvability + candidates[k].terms.novelty for k in trains_students}
        problem_groups = {k: candidates[k].teacher_prompt for k in trains_students}
        anchored = [Scored(("anchor", k), s.sample.prompt_ids, s.sample.completion_ids, s.sample.logprobs, s.reward,
                           finished=s.sample.finished) for k, a in enumerate(anchors) for s in a.solutions]
        return step_rows(teacher, student, self.config, problem_scores, problem_groups, anchored)

    def concept_mask(self, completion_ids: list[int]) -> list[bool] | None:
        """Loss mask of a teacher completion: every token but those of its <concepts> block."""
        span = concept_span(self.tokenizer.decode(completion_ids, skip_special_tokens=True))
        return None if span is None else [not inside for inside in tokens_in_span(self.tokenizer, completion_ids, span)]

    def grow_pool(self, candidates: list[Candidate]) -> None:
        """Every valid problem joins the novelty archive (a later repeat of it earns no novelty and no band
        reward); only those that pass admission and are no near-duplicate of the pool (or of each other) join
        the pool the teacher is shown."""
        config = self.config
        if not candidates:
            return
        vectors = np.stack([c.embedding for c in candidates])
        admissible = [k for k, c in enumerate(candidates)
                      if eligible(c.valid, c.solve_rate, config.pool_admission, config.band_low, config.band_high,
                                  bool(c.derived), config.solvability_requires_derived)]
        threshold = config.dedup_threshold if config.pool_dedup else None
        admitted = [admissible[i] for i in self.pool.distinct(vectors[admissible], threshold)]
        first_row = len(self.archive)
        self.archive.add(vectors)
        self.pool.add([{"problem": candidates[k].problem.problem, "answer": candidates[k].reference,
                        "concepts": candidates[k].problem.concepts, "step": self.step, "seed": False}
                       for k in admitted], [first_row + k for k in admitted])
        for k in admitted:
            candidates[k].admitted = True

    def evaluate_heldout(self) -> dict:
        """Accuracy on a fixed held-out subset, so a user watches it move while the curriculum grows."""
        from selfplay.eval.evaluate import benchmark_summary, evaluate_items

        config, n = self.config, self.config.eval_samples
        results = self.ranks.map(lambda mine: evaluate_items(
            config.eval_benchmark, mine, self.backend, self.tokenizer, self.student_template, self.verifier, n,
            config.eval_max_new_tokens, sampling=Sampling(config.eval_temperature, config.eval_top_p)), self.heldout)
        summary = benchmark_summary(results)
        prefix = f"eval/{config.eval_benchmark}"
        return {f"{prefix}/mean@{n}": summary[f"mean@{n}"], f"{prefix}/pass@{n}": summary[f"pass@{n}"]}

    def measure_probe(self) -> dict:
        """The probe's next problems through the student path of a teacher's problem (student prompt and samples,
        the run's reference and gates; where the reference is the teacher's claim, which no teacher made here,
        the students' majority), judged against their known answers. Nothing is trained on them, nothing enters
        the pool or archive, and the sampling RNG is restored afterwards, so the run is the one it would be
        without the probe."""
        from selfplay.curriculum.probe import ProbeJudged, probe_figures

        config = self.config
        start = (self.step // config.probe_every - 1) * config.probe_size
        problems = [self.probe[(start + i) % len(self.probe)] for i in range(config.probe_size)]
        candidates = [Candidate(-1, None, TeacherProblem(problem=p.problem, valid=True), novelty=0.0)
                      for p in problems]
        two_route = config.reference_answer == "two_route"
        with torch.random.fork_rng():
            candidates = self.ranks.map(lambda mine: self.solve(mine, mine if two_route else []) or mine, candidates)
        self.judge(candidates, "majority" if config.reference_answer in ("teacher", "program") else None)
        self.score(candidates)
        checks = [(p.answer, c.reference) for p, c in zip(problems, candidates) if c.reference is not None]
        checks += [(p.answer, s.answer) for p, c in zip(problems, candidates) for s in c.solutions if s.answer]
        equal = dict(zip(checks, self.verifier.equal_many(checks)))
        judged = [ProbeJudged(
            reference_right=None if c.reference is None else equal[(p.answer, c.reference)],
            band_pays=c.terms.solvability > 0,
            right=tuple(bool(s.answer) and equal[(p.answer, s.answer)] for s in c.solutions),
            rewarded=tuple(s.terms.correct > 0 for s in c.solutions),
        ) for p, c in zip(problems, candidates)]
        return {f"probe/{key}": value for key, value in probe_figures(judged).items()}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of `texts`, computed in shares across ranks, so that every rank holds the same vectors."""
        return np.stack(self.ranks.map(self.embedder.encode, texts)).reshape(len(texts), self.embedder.dim)

    def check_ranks_agree(self, rounds: list[Round]) -> str:
        """Every rank must hold the same pool, archive and weights. What changed this step is compared (by
        induction from identical starts, that covers the whole state at a cost that does not grow with it)."""
        weights = self.ranks.parameter_sums(self.updater.trainable).numpy()
        prompts = [p for played in rounds for p in played.prompts]
        valid = [c for played in rounds for c in played.valid]
        return self.ranks.agree({
            "teacher prompts": repr([p.ids for p in prompts]).encode(),
            "pool": repr([len(self.pool), [c.problem.problem for c in valid if c.admitted]]).encode(),
            "archive": repr(len(self.archive)).encode() + b"".join(c.embedding.tobytes() for c in valid),
            "novelty": repr([c.novelty for c in valid]).encode(),
            "weights": weights.tobytes(),
        })

    # ---------------------------------------------------------------- records
    def step_metrics(self, rounds: list[Round], rows: StepRows, update: dict, updates_before: int) -> dict:
        candidates = [c for played in rounds for c in played.candidates]
        valid = [c for c in candidates if c.valid]
        solutions = [s for c in valid for s in c.solutions]
        anchored = [s.correct for played in rounds for a in played.generated.anchors for s in a.solutions]
        sampler_version = min(played.generated.sampler_version for played in rounds)
        return {
            "step": self.step,
            "world_size": self.ranks.world,
            "teacher/reward_mean": _mean([c.reward for c in candidates]),
            **_term_means("teacher", TeacherTerms, [c.terms for c in candidates]),
            "teacher/valid_fraction": len(valid) / len(candidates),
            # in the band and paid for it (not a repeat, derived where that is required)
            "teacher/in_band_fraction": _mean([c.terms.solvability > 0 for c in valid]),
            "teacher/repeat_fraction": _mean([self.repeats_archive(c) for c in valid]),
            "teacher/completion_tokens": sum(len(c.sample.completion_ids) for c in candidates),
            "student/reward_mean": _mean([s.reward for s in solutions]),
            **_term_means("student", StudentTerms, [s.terms for s in solutions]),
            "student/solve_rate_mean": _mean([c.solve_rate for c in valid]),
            # problems judged against some answer: two routes (or a missing claim or program) can leave most
            # with none, and then nothing in the band and no student is paid (results.md, Lever 8)
            "student/reference_fraction": _mean([c.reference is not None for c in valid]),
            "student/completion_tokens": sum(len(s.sample.completion_ids) for s in solutions),
            # logged whether or not arithmetic_check uses it: how often the students' written arithmetic is true
            "student/arithmetic_holds": _mean([s.arithmetic_holds for s in solutions]),
            "student/arithmetic_uses_givens": _mean([s.arithmetic_holds and s.uses_givens for s in solutions]),
            "pool/size": len(self.pool),
            "archive/size": len(self.archive),
            "pool/admitted": sum(c.admitted for c in candidates),
            "update/rows": len(rows.rows),
            **{f"update/{role}_rows": sum(r.role == role for r in rows.rows) for role in ("teacher", "student")},
            **{f"update/{role}_groups": count for role, count in rows.groups_trained.items()},
            **{f"update/{key}": value for key, value in update.items()},
            **({"student/anchor_accuracy": _mean(anchored)} if anchored else {}),  # against the seeds' answers
            "generation/sampler_version": sampler_version,
            # optimizer updates the sampler's weights lagged the trainer's: 0, or 1 when pipelined
            "generation/staleness": updates_before - sampler_version,
        }

    def curriculum_record(self, c: Candidate, round_index: int) -> dict:
        p = c.problem
        return {
            "step": self.step,
            "round": round_index,
            "teacher_prompt": c.teacher_prompt,
            "problem": p.problem,
            "answer": c.reference,
            "teacher_answer": p.answer,
            "concepts": p.concepts,
            "valid": p.valid,
            "reason": p.reason,
            "solve_rate": c.solve_rate,
            "novelty": c.novelty,
            "teacher_reward": c.reward,
            "teacher_terms": dataclasses.asdict(c.terms),
            "student_answers": [s.answer for s in c.solutions],
            **({"restated": c.restated, "restated_answers": [s.answer for s in c.restated_solutions]}
               if self.config.reference_answer == "two_route" else {}),
            "student_rewards": [s.reward for s in c.solutions],
            "in_band": rewards.in_band(c.solve_rate, self.config.band_low, self.config.band_high),
            "derived": c.derived,
            "nearest_archived": c.nearest,
            "admitted": c.admitted,
            "solution": next((s.sample.text for s in c.solutions if s.correct), None),
            "raw": None if p.valid else c.sample.text[:500],
        }

    def skip_step(self, why: str) -> dict:
        self.empty_steps += 1
        log.warning("step %d skipped: %s", self.step, why)
        metrics = {"step": self.step, "skipped": why, "pool/size": len(self.pool), "teacher/valid_fraction": 0.0}
        if self.ranks.is_main:
            append_jsonl(self.run_dir / METRICS, [metrics])
        self.check_stalled()
        return metrics

    def check_stalled(self) -> None:
        if self.empty_steps >= self.config.max_empty_steps:
            raise RunStalled(
                f"{self.empty_steps} consecutive steps produced no valid teacher problem; the teacher is not "
                f"following the format in {self.config.teacher_template}. Check the prompt or lower min_problem_chars."
            )


def _solution(sample: Sample, problem: str) -> Solution:
    read = read_answer(sample.text, problem)
    return Solution(sample, read.answer, read.format_score, read.arithmetic_holds, read.uses_givens)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _term_means(role: str, kind: type, terms: list) -> dict[str, float | None]:
    """`<role>/<term>_mean` for each reward term of `kind`, over the completions where the term exists."""
    return {f"{role}/{f.name}_mean": _mean([getattr(t, f.name) for t in terms]) for f in dataclasses.fields(kind)}
