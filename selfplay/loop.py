"""The self-play loop. One step, phase by phase, as in shared/design/README.md:

    pool --sample--> teacher prompts --generate--> problems --parse--> valid problems
    valid problems --generate--> student solutions --verify--> reference answer, solve rate
    valid problems --embed + FAISS--> novelty
    rewards -> role-specific advantages -> one policy-gradient update
    accepted problems -> pool; every problem -> curriculum.jsonl; figures -> metrics.jsonl; checkpoint

Every phase is timed into metrics.jsonl as `time/<phase>`.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from selfplay import rewards
from selfplay.config import SelfPlayConfig, config_from_dict
from selfplay.curriculum import rundir
from selfplay.curriculum.pool import Pool
from selfplay.curriculum.seeds import load_seeds
from selfplay.novelty import Embedder, not_near_duplicates, novelty_scores
from selfplay.policy import EMBEDDED, Sample, TransformersBackend, load_policy, render_chat, resolve_model
from selfplay.roles import PromptTemplate, StudentSolution, TeacherProblem, parse_teacher, read_solution
from selfplay.train.advantages import group_advantages, group_stats, top_groups
from selfplay.train.updater import TrainRow, Updater, add_lora
from selfplay.verify import Verifier

log = logging.getLogger(__name__)

# Phases whose time is generation or forward/backward; everything else is overhead (bench_step.py).
GENERATION_PHASES = ("teacher_generate", "student_generate")
TRAINING_PHASES = ("update",)


class RunStalled(RuntimeError):
    """Too many consecutive steps without a single valid teacher problem."""


@dataclass
class Candidate:
    """One teacher completion and everything the step learns about it."""

    group: int  # index of the teacher prompt it came from
    sample: Sample
    parsed: TeacherProblem
    solutions: list[StudentSolution] = field(default_factory=list)
    student_samples: list[Sample] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    reference: str | None = None
    solve_rate: float | None = None
    novelty: float = 0.0
    embedding: np.ndarray | None = None
    teacher_reward: float = 0.0
    student_rewards: list[float] = field(default_factory=list)
    admitted: bool = False

    @property
    def valid(self) -> bool:
        return self.parsed.valid


class PhaseTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


@dataclass
class SelfPlay:
    """The parts a run is made of, built once (models, index, files) and passed to each phase."""

    config: SelfPlayConfig
    run_dir: Path
    model: object
    tokenizer: object
    backend: TransformersBackend
    embedder: Embedder
    verifier: Verifier
    pool: Pool
    updater: Updater
    teacher_template: PromptTemplate
    student_template: PromptTemplate
    rng: np.random.Generator
    heldout: list = field(default_factory=list)  # benchmark items for in-run evaluation (eval_every > 0)
    step: int = 0
    empty_steps: int = 0

    # ---------------------------------------------------------------- phases
    def teacher_prompts(self) -> tuple[list[list[int]], list[str]]:
        """Token ids of each teacher prompt, and the text of its request (to recognise echoes of it)."""
        prompts, requests = [], []
        for _ in range(self.config.teacher_prompts):
            problems = [e["problem"] for e in self.pool.sample(self.rng, self.config.teacher_examples)]
            messages = self.teacher_template.messages(
                problems=problems,
                need_answer=self.config.reference_answer != "majority",
                need_program=self.config.reference_answer == "program",
            )
            prompts.append(render_chat(self.tokenizer, messages))
            requests.append(messages[-1]["content"])
        return prompts, requests

    def parse(self, groups: list[list[Sample]], requests: list[str]) -> list[Candidate]:
        config = self.config
        return [
            Candidate(
                group=g,
                sample=sample,
                parsed=parse_teacher(
                    sample.text,
                    requests[g],
                    config.min_problem_chars,
                    config.max_concepts,
                    need_answer=config.reference_answer != "majority",
                    need_program=config.reference_answer == "program",
                ),
            )
            for g, group in enumerate(groups)
            for sample in group
        ]

    def run_programs(self, candidates: list[Candidate]) -> None:
        """Program mode: the teacher's program, run in the sandbox, supplies the reference answer."""
        from selfplay.verify.sandbox import run_program

        for c in candidates:
            result = run_program(c.parsed.program, self.config.program_timeout, self.config.program_memory_mb)
            if result.answer is None:
                c.parsed.valid, c.parsed.reason = False, f"program failed: {result.status}"
            else:
                c.parsed.answer = result.answer

    def solve(self, candidates: list[Candidate]) -> None:
        prompts = [render_chat(self.tokenizer, self.student_template.messages(problem=c.parsed.problem)) for c in candidates]
        groups = self.backend.generate(prompts, self.config.student_samples, self.config.student_max_new_tokens)
        for c, group in zip(candidates, groups):
            c.student_samples = group
            c.solutions = [read_solution(s.text, len(s.completion_ids)) for s in group]

    def verify(self, candidates: list[Candidate]) -> None:
        """Reference answer and per-solution correctness, through the guarded checker."""
        for c in candidates:
            answers = [s.answer for s in c.solutions]
            if self.config.reference_answer == "majority":
                classes = self.verifier.cluster(answers)
                top = rewards.majority_class(classes)
                c.correct = [top is not None and k == top for k in classes]
                c.reference = answers[classes.index(top)] if top is not None else None
            else:
                given = [i for i, a in enumerate(answers) if a is not None]
                verdicts = self.verifier.equal_many([(c.parsed.answer, answers[i]) for i in given])
                c.correct = [False] * len(answers)
                for i, verdict in zip(given, verdicts):
                    c.correct[i] = verdict
                c.reference = c.parsed.answer
            c.solve_rate = rewards.solve_rate(c.correct)

    def measure_novelty(self, candidates: list[Candidate]) -> None:
        vectors = self.embedder.encode([c.parsed.problem for c in candidates])
        for c, vector, score in zip(candidates, vectors, novelty_scores(vectors, self.pool.archive, self.config.novelty_top_k)):
            c.embedding, c.novelty = vector, score

    def score(self, candidates: list[Candidate]) -> None:
        config = self.config
        weights = rewards.TeacherWeights(config.w_solvability, config.w_novelty, config.w_teacher_format, config.w_length)
        for c in candidates:
            p = c.parsed
            fmt = rewards.teacher_format(p.has_problem, p.has_answer, p.has_concepts)
            solv = rewards.solvability(c.solve_rate, config.student_samples, config.band_low, config.band_high)
            length = rewards.length_term([s.tokens for s in c.solutions], config.length_cap, any(s.answer for s in c.solutions))
            c.teacher_reward = rewards.teacher_reward(c.valid, solv, c.novelty, fmt, length, weights)
            c.student_rewards = [
                rewards.student_reward(ok, s.format_score, config.w_correct, config.w_student_format)
                for ok, s in zip(c.correct, c.solutions)
            ]

    def training_rows(self, candidates: list[Candidate]) -> tuple[list[TrainRow], dict[str, int]]:
        """Role-specific advantages, zero-variance groups dropped, optional reference-style group selection."""
        config = self.config
        t_rewards = [c.teacher_reward for c in candidates]
        t_keys = [c.group for c in candidates]
        t_adv, t_keep = group_advantages(t_rewards, t_keys, config.normalize_advantages, config.advantage_eps)
        student = [(k, c, i) for k, c in enumerate(candidates) if c.valid for i in range(len(c.student_samples))]
        s_rewards = [c.student_rewards[i] for _, c, i in student]
        s_keys = [k for k, _, _ in student]
        s_adv, s_keep = group_advantages(s_rewards, s_keys, config.normalize_advantages, config.advantage_eps)
        if config.group_selection == "variance":
            t_groups = group_stats(t_rewards, t_keys)
            chosen_t = top_groups(t_groups, {g.key: g.std for g in t_groups}, config.teacher_groups_per_step)
            selection = {
                k: rewards.solvability(c.solve_rate, config.student_samples, config.band_low, config.band_high) + c.novelty
                for k, c in enumerate(candidates)
            }
            chosen_s = top_groups(group_stats(s_rewards, s_keys), selection, config.student_groups_per_step)
            t_keep = [keep and key in chosen_t for keep, key in zip(t_keep, t_keys)]
            s_keep = [keep and key in chosen_s for keep, key in zip(s_keep, s_keys)]
        rows = [
            TrainRow(c.sample.prompt_ids, c.sample.completion_ids, a, "teacher")
            for c, a, keep in zip(candidates, t_adv, t_keep)
            if keep and c.sample.completion_ids
        ]
        rows += [
            TrainRow(c.student_samples[i].prompt_ids, c.student_samples[i].completion_ids, a, "student")
            for (_, c, i), a, keep in zip(student, s_adv, s_keep)
            if keep and c.student_samples[i].completion_ids
        ]
        counts = {
            "teacher_groups_trained": len({k for k, keep in zip(t_keys, t_keep) if keep}),
            "student_groups_trained": len({k for k, keep in zip(s_keys, s_keep) if keep}),
        }
        return rows, counts

    def grow_pool(self, candidates: list[Candidate]) -> None:
        """Admit valid (or in-band) problems that are not near-duplicates of the pool or of each other."""
        config = self.config
        eligible = [
            c for c in candidates
            if c.valid and (config.pool_admission == "valid" or rewards.in_band(c.solve_rate, config.band_low, config.band_high))
        ]
        if not eligible:
            return
        vectors = np.stack([c.embedding for c in eligible])
        admitted = not_near_duplicates(vectors, self.pool.archive, config.dedup_threshold)
        for i in admitted:
            eligible[i].admitted = True
        entries = [
            {"problem": eligible[i].parsed.problem, "answer": eligible[i].reference, "concepts": eligible[i].parsed.concepts,
             "step": self.step, "seed": False}
            for i in admitted
        ]
        self.pool.add(entries, vectors[admitted] if admitted else vectors[:0])

    # ---------------------------------------------------------------- one step
    def run_step(self) -> dict:
        self.step += 1
        config, timer = self.config, PhaseTimer()
        step_start = time.perf_counter()
        if not len(self.pool):
            return self.skip_step("the pool is empty")
        with timer("teacher_prompts"):
            prompts, requests = self.teacher_prompts()
        with timer("teacher_generate"):
            teacher_groups = self.backend.generate(prompts, config.teacher_samples, config.teacher_max_new_tokens)
        with timer("parse"):
            candidates = self.parse(teacher_groups, requests)
            if config.reference_answer == "program":
                self.run_programs([c for c in candidates if c.valid])
            valid = [c for c in candidates if c.valid]
        if valid:
            with timer("student_generate"):
                self.solve(valid)
            with timer("verify"):
                self.verify(valid)
            with timer("novelty"):
                self.measure_novelty(valid)
            self.empty_steps = 0
        else:
            self.empty_steps += 1
            log.warning("step %d: no valid teacher problem (%d in a row); students skipped", self.step, self.empty_steps)
        with timer("rewards"):
            self.score(candidates)
            rows, counts = self.training_rows(candidates)
        update_stats = {}
        if rows:
            with timer("update"):
                update_stats = self.updater.step(rows)
        else:
            log.warning("step %d: every group has zero reward variance; no update", self.step)
        with timer("pool"):
            self.grow_pool(valid)
        heldout = {}
        if self.heldout and self.step % config.eval_every == 0:
            with timer("eval"):
                heldout = self.evaluate_heldout()
        with timer("log"):
            metrics = self.step_metrics(candidates, rows, counts, update_stats) | heldout
            rundir.append_jsonl(self.run_dir / rundir.CURRICULUM, [self.curriculum_record(c) for c in candidates])
        total = time.perf_counter() - step_start
        metrics.update({f"time/{phase}": seconds for phase, seconds in timer.seconds.items()})
        metrics["time/step"] = total
        rundir.append_jsonl(self.run_dir / rundir.METRICS, [metrics])
        self.check_stalled()
        return metrics

    def skip_step(self, why: str) -> dict:
        self.empty_steps += 1
        log.warning("step %d skipped: %s", self.step, why)
        metrics = {"step": self.step, "skipped": why, "pool_size": len(self.pool), "valid_fraction": 0.0}
        rundir.append_jsonl(self.run_dir / rundir.METRICS, [metrics])
        self.check_stalled()
        return metrics

    def check_stalled(self) -> None:
        if self.empty_steps >= self.config.max_empty_steps:
            raise RunStalled(
                f"{self.empty_steps} consecutive steps produced no valid teacher problem; the teacher is not "
                f"following the format in {self.config.teacher_template}. Check the prompt or lower min_problem_chars."
            )

    def evaluate_heldout(self) -> dict:
        """Accuracy on a fixed held-out subset, so a user watches it move while the curriculum grows."""
        from selfplay.eval.evaluate import benchmark_summary, evaluate_items

        config, n = self.config, self.config.eval_samples
        results = evaluate_items(config.eval_benchmark, self.heldout, self.backend, self.tokenizer,
                                 self.student_template, self.verifier, n, config.eval_max_new_tokens)
        summary = benchmark_summary(results)
        prefix = f"eval/{config.eval_benchmark}"
        return {f"{prefix}/mean@{n}": summary[f"mean@{n}"], f"{prefix}/pass@{n}": summary[f"pass@{n}"]}

    def step_metrics(self, candidates: list[Candidate], rows: list[TrainRow], counts: dict, update: dict) -> dict:
        config = self.config
        valid = [c for c in candidates if c.valid]
        student_rewards = [r for c in valid for r in c.student_rewards]

        def mean(values):
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        gen_tokens = sum(len(c.sample.completion_ids) for c in candidates) + sum(
            len(s.completion_ids) for c in valid for s in c.student_samples
        )
        return {
            "step": self.step,
            "teacher_reward_mean": mean([c.teacher_reward for c in candidates]),
            "student_reward_mean": mean(student_rewards),
            "solve_rate_mean": mean([c.solve_rate for c in valid]),
            "in_band_fraction": mean([rewards.in_band(c.solve_rate, config.band_low, config.band_high) for c in valid]),
            "valid_fraction": len(valid) / len(candidates),
            "novelty_mean": mean([c.novelty for c in valid]),
            "pool_size": len(self.pool),
            "admitted": sum(c.admitted for c in candidates),
            "rows_trained": len(rows),
            "teacher_rows": sum(r.role == "teacher" for r in rows),
            "student_rows": sum(r.role == "student" for r in rows),
            "generated_tokens": gen_tokens,
            "verify_timeouts": self.verifier.timeouts,
            **counts,
            **update,
        }

    def curriculum_record(self, c: Candidate) -> dict:
        p = c.parsed
        first_correct = next((s.text for s, ok in zip(c.solutions, c.correct) if ok), None)
        return {
            "step": self.step,
            "group": c.group,
            "problem": p.problem,
            "answer": c.reference,
            "teacher_answer": p.answer,
            "concepts": p.concepts,
            "valid": p.valid,
            "reason": p.reason,
            "solve_rate": c.solve_rate,
            "novelty": c.novelty if p.valid else None,
            "teacher_reward": c.teacher_reward,
            "student_answers": [s.answer for s in c.solutions],
            "student_rewards": c.student_rewards,
            "in_band": rewards.in_band(c.solve_rate, self.config.band_low, self.config.band_high),
            "admitted": c.admitted,
            "solution": first_correct,
            "raw": None if p.valid else c.sample.text[:500],
        }

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        def fill(folder: Path) -> dict:
            if self.updater.is_lora:
                self.model.save_pretrained(folder / "adapter")
            else:
                self.model.save_pretrained(folder / "model")
                self.tokenizer.save_pretrained(folder / "model")
            torch.save(self.updater.state_dict(), folder / "trainer.pt")
            torch.save(
                {"python": random.getstate(), "numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
                folder / "rng.pt",
            )
            self.pool.save(folder / "pool")
            return {"base_model": self.config.model, "lora": self.updater.is_lora, "empty_steps": self.empty_steps,
                    "pool_size": len(self.pool)}

        return rundir.write_checkpoint(self.run_dir, self.step, fill, self.config.keep_checkpoints)

    def restore(self, checkpoint: Path, state: dict) -> None:
        try:
            self.updater.load_state_dict(torch.load(checkpoint / "trainer.pt", weights_only=False))
            rng = torch.load(checkpoint / "rng.pt", weights_only=False)
        except Exception as error:
            raise rundir.RunDirError(f"{checkpoint}: trainer.pt or rng.pt unreadable ({error}); delete this "
                                     "checkpoint folder to resume from the one before") from None
        random.setstate(rng["python"])
        self.rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch"])
        self.pool.load(checkpoint / "pool")
        self.step, self.empty_steps = state["step"], state.get("empty_steps", 0)


def _load_trainable_policy(config: SelfPlayConfig, checkpoint: Path | None):
    """The policy to train: from the checkpoint being resumed, else from config.model; LoRA-wrapped if asked."""
    if checkpoint is not None and (checkpoint / "model").is_dir():
        return load_policy(str(checkpoint / "model"), config.device, config.dtype)
    model, tokenizer = load_policy(config.model, config.device, config.dtype)
    if checkpoint is not None and (checkpoint / "adapter").is_dir():
        from peft import PeftModel

        return PeftModel.from_pretrained(model, checkpoint / "adapter", is_trainable=True), tokenizer
    return (add_lora(model, config) if config.lora else model), tokenizer


def build(config: SelfPlayConfig, resume: bool) -> SelfPlay:
    """Check everything cheap first (run dir, seeds, prompts), then load models and restore state."""
    run_dir = Path(config.output_dir)
    if resume and not (run_dir / rundir.RUN_INFO).exists():
        raise rundir.RunDirError(f"--resume: {run_dir} holds no run to resume")
    seeds = load_seeds(config.seeds, config.seed_problem_field, config.seed_answer_field)
    teacher_template = PromptTemplate.load(config.teacher_template)
    student_template = PromptTemplate.load(config.student_template)
    if config.model != EMBEDDED:
        resolve_model(config.model)
    heldout = []
    if config.eval_every:
        from selfplay.eval.benchmarks import load_benchmark
        from selfplay.eval.evaluate import default_benchmarks_dir

        heldout = load_benchmark(config.eval_benchmark, default_benchmarks_dir(config.benchmarks_dir), limit=config.eval_limit)
    rundir.prepare_run_dir(run_dir, resume)
    checkpoints = rundir.checkpoint_dirs(run_dir) if resume else []
    checkpoint = checkpoints[-1] if checkpoints else None
    if resume and (run_dir / rundir.CONFIG).exists():
        saved = config_from_dict(yaml.safe_load((run_dir / rundir.CONFIG).read_text()), str(run_dir / rundir.CONFIG))
        changed = [k for k, v in config.to_dict().items() if saved.to_dict()[k] != v]
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
    # Logs past the checkpoint describe steps that will be run again: cut them so no step appears twice.
    resumed_step = int(checkpoint.name.split("-")[1]) if checkpoint else 0
    for name in (rundir.METRICS, rundir.CURRICULUM):
        rundir.truncate_jsonl(run_dir / name, lambda r: isinstance(r.get("step"), int) and r["step"] <= resumed_step)
    rundir.atomic_write(run_dir / rundir.CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model, tokenizer = _load_trainable_policy(config, checkpoint)
    backend = TransformersBackend(model, tokenizer, config.temperature, config.top_p, config.generation_batch_size)
    embedder = Embedder(config.embedder)
    pool = Pool(embedder.dim, config.index_type, config.index_nlist, config.pool_max_size)
    if checkpoint is None:
        pool.add(
            [{"problem": s.problem, "answer": s.answer, "concepts": s.concepts, "step": 0, "seed": True} for s in seeds],
            embedder.encode([s.problem for s in seeds]),
        )
    selfplay = SelfPlay(
        config=config,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        backend=backend,
        embedder=embedder,
        verifier=Verifier(config.verify_timeout, config.verify_workers),
        pool=pool,
        updater=Updater(model, config, tokenizer.pad_token_id),
        teacher_template=teacher_template,
        student_template=student_template,
        rng=np.random.default_rng(config.seed),
        heldout=heldout,
    )
    if checkpoint is not None:
        import json

        selfplay.restore(checkpoint, json.loads((checkpoint / "state.json").read_text()))
        log.info("resumed from %s (step %d)", checkpoint, selfplay.step)
    return selfplay


def run(config: SelfPlayConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run self-play until `max_steps` (or forever when 0); returns the run directory."""
    from tqdm import tqdm

    from selfplay.tracking import Tracker

    selfplay = build(config, resume)
    tracker = Tracker(config, selfplay.run_dir)
    bar = tqdm(total=config.max_steps or None, initial=selfplay.step, disable=not progress, unit="step")
    try:
        while not config.max_steps or selfplay.step < config.max_steps:
            metrics = selfplay.run_step()
            if selfplay.step % config.save_every == 0 or selfplay.step == config.max_steps:
                selfplay.save_checkpoint()
            tracker.log(metrics)
            bar.update(1)
            bar.set_postfix(
                valid=f"{metrics['valid_fraction']:.2f}",
                solve=f"{metrics.get('solve_rate_mean') or 0:.2f}",
                band=f"{metrics.get('in_band_fraction') or 0:.2f}",
                pool=metrics["pool_size"],
            )
    finally:
        bar.close()
        tracker.finish()
        selfplay.verifier.close()
    return selfplay.run_dir
