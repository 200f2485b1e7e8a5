"""The one config object: a flat, typed dataclass read from YAML and overridden on the command line.

Flat (CleanRL-style) so that every setting is one `--name value` flag and one YAML key. Parsing is
transformers' HfArgumentParser; this module adds what it lacks: YAML keys and types checked against the
dataclass with messages that name the file and the key, and cross-field validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from selfplay.errors import SelfPlayError

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_ROOT = PACKAGE_DIR.parent  # the repository, when running from a checkout (editable install)
# The folders of shipped files. The checkout's top-level prompts/ and seeds/ are the source of truth; a wheel
# carries copies inside the package (pyproject.toml maps them to selfplay/prompts and selfplay/seeds).
SHIPPED_FOLDERS = ("prompts", "seeds")
TEACHER_TEMPLATE, STUDENT_TEMPLATE, RESTATE_TEMPLATE = "prompts/teacher.yaml", "prompts/student.yaml", "prompts/restate.yaml"
PROBE_FILE = "seeds/probe.jsonl"  # written by selfplay.curriculum.probe.write_problems
BENCHMARKS_DIR = "../shared/benchmarks"
# How evaluation samples, in `selfplay eval` and in-run alike, so that their figures compare.
EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95


class ConfigError(SelfPlayError, ValueError):
    """A config value that cannot be used; the message names the source and the key."""


@dataclass
class GenerationSettings:
    """How completions are generated; shared by self-play runs and `selfplay eval`."""

    generation_backend: Literal["auto", "transformers", "vllm", "vllm-server"] = field(
        default="auto", metadata={"help": "Generation engine; auto = vllm (colocated in this process) when it is "
                                          "installed, else transformers; vllm-server = a vLLM server process at "
                                          "vllm_server_url (`selfplay serve` starts one with the run's settings)."})
    vllm_server_url: str = field(default="http://127.0.0.1:8000", metadata={
        "help": "vllm-server: the server's URL (`selfplay serve` listens where it says)."})
    vllm_server_timeout: float = field(default=300.0, metadata={
        "help": "vllm-server: seconds to wait for the server to come up, and for a request or a weight push."})
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "vLLM weights dtype; auto = bfloat16 on GPU and on CPUs that compute in "
                                          "it (AVX512-BF16, AMX), else float32. The trainer keeps its own dtype; the "
                                          "gap is corrected by truncated importance sampling."})
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "Share of GPU memory vLLM may take (it shares the GPU with training)."})
    vllm_kv_cache_gib: float = field(default=1.0, metadata={"help": "vLLM KV-cache size on CPU, in GiB."})
    vllm_max_model_len: int = field(default=0, metadata={"help": "vLLM context length (0: the model's own)."})
    vllm_enforce_eager: bool = field(
        default=True, metadata={"help": "No graph compilation: the engine starts in seconds. Compiled (false), it "
                                        "starts in about a minute on 2 CPU cores (84 s cold, 58 s from vLLM's "
                                        "compile cache) and generates about 30 per cent faster, for long runs."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM engine spans."})


@dataclass
class SelfPlayConfig(GenerationSettings):
    # --- run ---
    output_dir: str = field(default="runs/default", metadata={"help": "Run directory (created; resumable)."})
    max_steps: int = field(default=100, metadata={"help": "Self-play steps to run; 0 runs until stopped."})
    seed: int = field(default=42, metadata={"help": "Seed for Python, NumPy and torch RNGs."})
    save_every: int = field(default=1, metadata={"help": "Checkpoint every N steps (resume restarts there)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept on disk (newest first)."})
    report_to: Literal["none", "wandb"] = field(default="none", metadata={"help": "Experiment tracker."})
    wandb_project: str = field(default="selfplay", metadata={"help": "W&B project name."})
    wandb_mode: Literal["offline", "online"] = field(default="offline", metadata={"help": "W&B mode."})
    max_empty_steps: int = field(
        default=20, metadata={"help": "Stop after this many consecutive steps with no valid teacher problem."}
    )

    # --- models and data ---
    model: str = field(default="embedded", metadata={"help": "Policy: 'embedded', a hub id or a local folder."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "Training compute dtype; auto = bfloat16 where the hardware computes in it "
                                          "(GPU, AVX512-BF16 or AMX CPU), else float32. Full fine-tuning keeps fp32 "
                                          "master weights."}
    )
    attention: Literal["auto", "eager", "sdpa"] = field(
        default="auto", metadata={"help": "transformers' attention for training and transformers generation; auto = "
                                          "eager on CPU (bfloat16 updates 8-19 per cent faster than with sdpa's CPU "
                                          "kernel here; its memory grows with length squared), transformers' default "
                                          "(sdpa) on GPU."}
    )
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda', 'cuda:1', ..."})
    embedder: str = field(default="embedded", metadata={"help": "Sentence-transformers model for novelty."})
    seeds: str = field(default="seeds/single.jsonl", metadata={"help": "Seed problems (JSONL/CSV/Parquet/HF)."})
    seed_problem_field: str = field(default="problem", metadata={"help": "Problem column in the seed set."})
    seed_answer_field: str = field(default="answer", metadata={"help": "Answer column in the seed set."})

    # --- generation ---
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for both roles."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    generation_batch_size: int = field(default=16, metadata={"help": "Most sequences in one generate call."})
    async_generation: bool = field(default=False, metadata={
        "help": "Pipeline: the next step's rounds are written (teacher and students) while this step is judged and "
                "trained, by weights one optimizer step old; the loss's importance sampling corrects for it. The "
                "next step's prompts are drawn from the pool before this step's admissions. Needs a vLLM backend."})

    # --- teacher ---
    teacher_prompts: int = field(default=4, metadata={"help": "Teacher prompts per step."})
    teacher_samples: int = field(default=8, metadata={"help": "Completions per teacher prompt (its group)."})
    teacher_examples: int = field(default=1, metadata={"help": "Pool problems shown in each teacher prompt."})
    teacher_max_new_tokens: int = field(default=2048, metadata={"help": "Token limit of a teacher completion."})
    teacher_template: str = field(default=TEACHER_TEMPLATE, metadata={"help": "Teacher prompt file."})
    min_problem_chars: int = field(default=10, metadata={"help": "Shorter problems are invalid."})
    max_concepts: int = field(default=3, metadata={"help": "Most concepts a valid problem may list."})

    # --- student ---
    student_samples: int = field(default=8, metadata={"help": "Solutions per valid problem (>= 2)."})
    student_max_new_tokens: int = field(default=2048, metadata={"help": "Token limit of a solution."})
    student_template: str = field(default=STUDENT_TEMPLATE, metadata={"help": "Student prompt file."})
    reference_answer: Literal["majority", "teacher", "program", "two_route"] = field(
        default="majority",
        metadata={"help": "Reference for correctness: majority answer, teacher's answer, its program's output, or "
                          "two_route: the answer that wins both on the problem and on a restatement of it (written "
                          "by the policy with restate_template, solved by the students too)."},
    )
    restate_template: str = field(default=RESTATE_TEMPLATE, metadata={"help": "Restatement prompt (two_route)."})
    arithmetic_check: bool = field(default=False, metadata={
        "help": "A solution's answer counts (towards the majority, and as correct) only where the arithmetic it "
                "writes holds: every 'a op b = c' is true and the answer is the last one's result "
                "(selfplay.verify.arithmetic)."})
    arithmetic_uses_givens: bool = field(default=False, metadata={
        "help": "With arithmetic_check: the arithmetic must also use every number the problem states."})

    # --- rewards ---
    band_low: float = field(default=0.5, metadata={"help": "Lower edge of the learnable solve-rate band."})
    band_high: float = field(default=0.9, metadata={"help": "Upper edge of the learnable solve-rate band."})
    novelty_top_k: int = field(default=5, metadata={"help": "Nearest neighbours averaged for novelty."})
    w_solvability: float = field(default=1.0, metadata={"help": "Teacher weight: solvability band."})
    solvability_requires_derived: bool = field(default=False, metadata={
        "help": "Teacher solvability only for a problem whose reference answer is computed from it (two or more "
                "numbers stated, the answer none of them): no band reward for a problem that states its answer."})
    min_majority_share: float = field(default=0.0, metadata={
        "help": "Confidence gate: a problem whose reference is given by fewer than this share of its solutions pays "
                "no student for agreeing with it and no band to its teacher (0: off)."})
    w_novelty: float = field(default=1.0, metadata={"help": "Teacher weight: novelty."})
    w_teacher_format: float = field(default=0.1, metadata={"help": "Teacher weight: format."})
    w_length: float = field(default=0.0, metadata={"help": "Teacher weight: student solution length."})
    length_cap: int = field(default=1000, metadata={"help": "Solution length (tokens) at which length saturates."})
    w_correct: float = field(default=1.0, metadata={"help": "Student weight: verified correct answer."})
    w_student_format: float = field(default=0.1, metadata={"help": "Student weight: format."})

    # --- pool and archive ---
    pool_admission: Literal["valid", "in_band", "in_band_derived"] = field(default="valid", metadata={
        "help": "Which new problems enter the pool: every valid one; those in the band; those in the band whose "
                "reference answer is computed from the problem (two or more numbers stated, the answer none of "
                "them: for arithmetic word problems)."})
    pool_max_size: int = field(default=0, metadata={"help": "Most problems in the pool (0: unbounded; FIFO)."})
    anchor_share: float = field(default=0.0, metadata={
        "help": "Known-answer anchors, for seeds with answers: per round, this share of teacher_prompts x "
                "teacher_samples seed problems (taken in turn) join the students' groups, rewarded against the "
                "seed's answer; they train students only, and enter neither pool nor archive (0: pure self-play)."})
    seed_share: float = field(default=0.0, metadata={
        "help": "Share of the teacher's prompts that show seeds instead of pool problems: it anchors the "
                "curriculum to the kind of problem the user seeded while the pool fills with the teacher's own "
                "(0: uniform over the pool, the reference)."})
    dedup_threshold: float = field(default=0.95, metadata={
        "help": "Cosine at or above which a problem is a near-duplicate (of the pool, or of a problem its prompt "
                "showed)."})
    pool_dedup: bool = field(default=True, metadata={
        "help": "Keep near-duplicates out of the pool; false admits every problem, duplicates too (the reference)."})
    index_type: Literal["auto", "flat", "hnsw"] = field(default="auto", metadata={
        "help": "FAISS index of the archive: exact (flat), HNSW (about log N per search), or flat up to "
                "index_exact_limit problems and HNSW past it (auto)."})
    index_exact_limit: int = field(default=50_000, metadata={
        "help": "index_type auto: the most problems searched exactly."})
    index_storage: Literal["float32", "float16"] = field(default="float32", metadata={
        "help": "How the archive stores embeddings; float16 halves memory and disk (see experiments/README.md)."})

    # --- training ---
    learning_rate: float = field(default=3e-7, metadata={"help": "AdamW learning rate."})
    lr_schedule: Literal["constant", "constant_with_warmup", "linear", "cosine"] = field(
        default="constant", metadata={"help": "LR schedule ('constant' ignores warmup_steps)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up optimizer steps (all but 'constant')."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=0.5, metadata={"help": "Gradient clipping norm."})
    clip_epsilon: float = field(default=0.2, metadata={"help": "PPO ratio clip: [1 - eps, 1 + eps]."})
    importance_sampling_cap: float = field(
        default=2.0, metadata={"help": "Truncated importance sampling: per-token weight trainer/sampler probability, "
                                       "capped here, corrects for the sampler's numerics (vLLM kernels, dtype)."})
    importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = field(
        default="token_truncate", metadata={
            "help": "How the trainer/sampler ratio corrects each row, as TRL's vllm_importance_sampling_mode: per "
                    "token or per sequence (the product of its tokens' ratios), capped at importance_sampling_cap "
                    "(truncate) or zeroed above it (mask)."})
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = field(default="dapo", metadata={
        "help": "How each role's token losses are averaged, as TRL's loss_type, within each role: dapo, over all the "
                "role's tokens in the optimizer step; grpo, over each row's tokens, then over the role's rows; "
                "dr_grpo, summed over each row, over the role's rows times its token limit. The two roles weigh half "
                "each."})
    clip_epsilon_high: float = field(default=0.0, metadata={
        "help": "Upper ratio clip 1 + clip_epsilon_high (DAPO's clip-higher, TRL's epsilon_high); 0: clip_epsilon."})
    importance_sampling_level: Literal["token", "sequence"] = field(default="token", metadata={
        "help": "The policy ratio per token, or per sequence as the exp of its tokens' mean log-ratio (GSPO)."})
    mask_truncated_completions: bool = field(default=False, metadata={
        "help": "Keep completions cut at their token limit out of the loss (they still count in grpo's and "
                "dr_grpo's row counts, as in TRL)."})
    kl_beta: float = field(default=0.0, metadata={"help": "KL-to-reference coefficient (0: no reference)."})
    updates_per_step: int = field(default=1, metadata={"help": "Optimizer passes over each step's batch."})
    rounds_per_update: int = field(default=1, metadata={
        "help": "Generation rounds whose rows one optimizer step trains on (the reference's gradient accumulation: "
                "8). Each round draws its teacher prompts from the pool as it stands, measures novelty against the "
                "archive as it stands and grows both; the weights, and the sampler's copy, change once per step."})
    train_micro_batch_size: int = field(default=4, metadata={"help": "Rows per forward/backward (accumulated)."})
    normalize_advantages: bool = field(default=True, metadata={"help": "Divide by the group std (else centre only)."})
    advantage_eps: float = field(default=1e-4, metadata={"help": "Added to the group std."})
    group_selection: Literal["all", "variance"] = field(
        default="all",
        metadata={"help": "'all' trains every group with signal; 'variance' keeps the reference's selection."},
    )
    teacher_groups_per_step: int = field(default=1, metadata={
        "help": "Teacher groups kept by 'variance' in each generation round."})
    train_teacher: bool = field(default=True, metadata={
        "help": "Train the teacher role; false trains only students, on the problems the policy still writes "
                "(the control that isolates what teaching adds)."})
    mask_concepts: bool = field(default=True, metadata={"help": "Keep the teacher's <concepts> block out of the loss."})
    student_groups_per_step: int = field(default=1, metadata={
        "help": "Student groups (problems) kept by 'variance' in each generation round."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={"help": "Comma-separated."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    shared_prompt: bool = field(default=True, metadata={
        "help": "The update computes a prompt once for all the rows that share it (a problem's solutions, a teacher "
                "prompt's samples) and reuses its keys and values; false runs every row whole (as gradient "
                "checkpointing always does: its recomputation cannot share them)."})

    # --- verification ---
    verify_timeout: float = field(default=5.0, metadata={"help": "Wall-clock seconds per answer check."})
    verify_workers: int = field(default=2, metadata={"help": "Verifier worker processes (and teacher programs run at once)."})
    program_timeout: float = field(default=5.0, metadata={"help": "Seconds for a teacher program (program mode)."})
    program_memory_mb: int = field(default=512, metadata={"help": "Memory limit of a teacher program."})

    # --- the known-answer probe: are the rewards right? ---
    probe: str = field(default=PROBE_FILE, metadata={
        "help": "Known-answer problems (a seed-format file whose every problem has an answer) the run's rewards are "
                "measured on: they go through the student path of a teacher's problem and are never trained on."})
    probe_every: int = field(default=0, metadata={"help": "Measure the rewards on the probe every N steps (0: never)."})
    probe_size: int = field(default=16, metadata={
        "help": "Probe problems per measurement, taken in turn through the probe file."})

    # --- evaluation during the run ---
    eval_every: int = field(default=0, metadata={"help": "Evaluate a held-out subset every N steps (0: never)."})
    eval_benchmark: str = field(default="mawps_singleop", metadata={"help": "Benchmark for in-run evaluation."})
    eval_limit: int = field(default=32, metadata={"help": "Problems in the in-run evaluation subset."})
    eval_samples: int = field(default=2, metadata={"help": "Samples per problem in the in-run evaluation."})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Token limit in the in-run evaluation."})
    eval_temperature: float = field(default=EVAL_TEMPERATURE, metadata={
        "help": "Sampling temperature of the in-run evaluation (that of `selfplay eval`, not of training)."})
    eval_top_p: float = field(default=EVAL_TOP_P, metadata={"help": "Nucleus threshold of the in-run evaluation."})
    benchmarks_dir: str = field(default=BENCHMARKS_DIR, metadata={"help": "Folder of benchmark JSONL."})

    def __post_init__(self) -> None:
        _check_types(self, source="config")
        self.validate()

    def validate(self) -> None:
        def require(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"config key '{key}' = {getattr(self, key)!r}: {why}")

        require(self.student_samples >= 2, "student_samples", "a solve rate needs at least 2 solutions")
        require(self.teacher_samples >= 1, "teacher_samples", "must be at least 1")
        require(self.teacher_prompts >= 1, "teacher_prompts", "must be at least 1")
        require(self.teacher_examples >= 1, "teacher_examples", "must be at least 1")
        require(0.0 <= self.seed_share <= 1.0, "seed_share", "must be in [0, 1]")
        require(0.0 <= self.band_low <= self.band_high <= 1.0, "band_low", "need 0 <= band_low <= band_high <= 1")
        require(self.temperature > 0, "temperature", "must be positive (sampling is required for groups)")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_steps >= 0, "max_steps", "must be >= 0")
        require(self.save_every >= 1, "save_every", "must be >= 1")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
        require(self.novelty_top_k >= 1, "novelty_top_k", "must be >= 1")
        require(0 < self.dedup_threshold <= 1.0, "dedup_threshold", "must be in (0, 1]")
        require(self.index_exact_limit >= 0, "index_exact_limit", "must be >= 0")
        require(self.lr_schedule != "constant" or self.warmup_steps == 0, "warmup_steps",
                "is ignored by lr_schedule 'constant': use 'constant_with_warmup'")
        require(self.learning_rate > 0, "learning_rate", "must be positive")
        require(self.train_micro_batch_size >= 1, "train_micro_batch_size", "must be >= 1")
        require(self.updates_per_step >= 1, "updates_per_step", "must be >= 1")
        require(self.rounds_per_update >= 1, "rounds_per_update", "must be >= 1")
        require(self.clip_epsilon_high >= 0, "clip_epsilon_high", "must be >= 0 (0: the same as clip_epsilon)")
        require(self.verify_timeout > 0, "verify_timeout", "must be positive")
        require(self.verify_workers >= 1, "verify_workers", "must be >= 1")
        require(self.generation_batch_size >= 1, "generation_batch_size", "must be >= 1")
        require(self.length_cap >= 1, "length_cap", "must be >= 1")
        require(self.max_concepts >= 1, "max_concepts", "must be >= 1")
        require(self.max_empty_steps >= 1, "max_empty_steps", "must be >= 1")
        require(self.importance_sampling_cap >= 1.0, "importance_sampling_cap", "must be >= 1")
        require(0 < self.vllm_gpu_memory_utilization <= 1, "vllm_gpu_memory_utilization", "must be in (0, 1]")
        require(self.vllm_kv_cache_gib > 0, "vllm_kv_cache_gib", "must be positive")
        require(self.vllm_tensor_parallel_size >= 1, "vllm_tensor_parallel_size", "must be >= 1")
        require(self.vllm_server_timeout > 0, "vllm_server_timeout", "must be positive")
        require(self.probe_every >= 0, "probe_every", "must be >= 0 (0: no probe)")
        require(0.0 <= self.min_majority_share <= 1.0, "min_majority_share", "must be in [0, 1]")
        require(0.0 <= self.anchor_share <= 1.0, "anchor_share", "must be in [0, 1]")
        require(self.probe_size >= 1, "probe_size", "must be >= 1")
        require(self.arithmetic_check or not self.arithmetic_uses_givens, "arithmetic_uses_givens",
                "refines arithmetic_check: set arithmetic_check: true too")
        require(not self.async_generation or self.generation_backend != "transformers", "async_generation",
                "needs a vLLM backend: the transformers backend samples from the model being trained")

    def per_update(self) -> dict[str, int]:
        """What one optimizer step generates and trains on, over all processes (each generates and trains its
        share): teacher completions, student solutions at most (every teacher completion a valid problem), and
        the rows trained per role at most (under 'variance' selection, its groups; under 'all', every row)."""
        teacher = self.teacher_prompts * self.teacher_samples * self.rounds_per_update
        student = teacher * self.student_samples
        variance = self.group_selection == "variance"
        return {
            "teacher_completions": teacher,
            "student_solutions": student,
            "teacher_rows": 0 if not self.train_teacher
            else self.teacher_groups_per_step * self.teacher_samples * self.rounds_per_update if variance else teacher,
            "student_rows": self.student_groups_per_step * self.student_samples * self.rounds_per_update
            if variance else student,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES = typing.get_type_hints(SelfPlayConfig)
FIELD_NAMES = [f.name for f in dataclasses.fields(SelfPlayConfig)]


def _check_value(key: str, value, source: str):
    """Return `value` as the field's type, or raise naming the source and key."""
    expected = FIELD_TYPES[key]
    if typing.get_origin(expected) is Literal:
        choices = typing.get_args(expected)
        if value not in choices:
            raise ConfigError(f"{source}: key '{key}' = {value!r}: must be one of {list(choices)}")
        return value
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}' = {value!r}: must be true or false")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key '{key}' = {value!r}: must be an integer")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key '{key}' = {value!r}: must be a number")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key '{key}' = {value!r}: must be a string")
        return value
    raise TypeError(f"unsupported config field type {expected} for {key}")


def _check_types(config: SelfPlayConfig, source: str) -> None:
    for key in FIELD_NAMES:
        setattr(config, key, _check_value(key, getattr(config, key), source))


def unknown_key_message(key: str, source: str) -> str:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{source}: unknown config key '{key}'{hint}"


def read_yaml_config(path: str | Path) -> dict:
    """Read a config YAML into checked values; unknown keys and wrong types name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of config keys to values")
    values = {}
    for key, value in data.items():
        if key not in FIELD_TYPES:
            raise ConfigError(unknown_key_message(str(key), str(path)))
        values[key] = _check_value(key, value, str(path))
    return values


def settings_parser(*settings: type, **kwargs):
    """An argument parser whose flags are the fields of the `settings` dataclasses, each with its help and
    default (`--help` lists them all), so every default lives once, in its dataclass."""
    from transformers import HfArgumentParser

    return HfArgumentParser(settings, allow_abbrev=False, **kwargs)


def parse_config(config_file: str | None, cli_args: list[str], parser=None) -> SelfPlayConfig:
    """YAML values (if any) become defaults; command-line flags override them. `parser` (from
    `settings_parser(SelfPlayConfig, ...)`) may declare further flags, which are ignored here."""
    parser = parser or settings_parser(SelfPlayConfig)
    if config_file:
        parser.set_defaults(**read_yaml_config(config_file))
    namespace, remaining = parser.parse_known_args(cli_args)
    if remaining:
        flag = next((a for a in remaining if a.startswith("--")), remaining[0])
        raise ConfigError(unknown_key_message(flag.lstrip("-").split("=")[0].replace("-", "_"), "command line"))
    try:
        return SelfPlayConfig(**{key: value for key, value in vars(namespace).items() if key in FIELD_TYPES})
    except ConfigError as error:
        raise ConfigError(f"{error}" if config_file is None else f"{config_file} + command line: {error}") from None


def config_from_dict(values: dict, source: str) -> SelfPlayConfig:
    """Rebuild a config saved in a run directory; keys this version does not know are an error naming them."""
    for key in values:
        if key not in FIELD_TYPES:
            raise ConfigError(unknown_key_message(str(key), source))
    checked = {key: _check_value(key, value, source) for key, value in values.items()}
    return SelfPlayConfig(**checked)


def resolve_path(path: str) -> Path:
    """A path as given if it exists; else, for `prompts/...` and `seeds/...`, the file shipped with selfplay
    (inside the installed package, or in the checkout), so the defaults work from any directory."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute() or candidate.parts[:1] not in [(f,) for f in SHIPPED_FOLDERS]:
        return candidate
    for root in (PACKAGE_DIR, CHECKOUT_ROOT):
        if (root / candidate).exists():
            return root / candidate
    return candidate
