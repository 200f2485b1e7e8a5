"""A run's lifecycle: build its parts (cheap checks first, then models), restore the checkpoint being resumed,
run steps, checkpoint. The step itself is `loop.py`; where files live is `rundir.py`."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from selfplay import logs, rundir
from selfplay.config import ConfigError, SelfPlayConfig
from selfplay.curriculum.pool import Pool
from selfplay.curriculum.probe import load_probe
from selfplay.curriculum.seeds import load_seeds
from selfplay.distributed import Ranks, whole
from selfplay.loop import SelfPlay
from selfplay.novelty import Archive, Embedder
from selfplay.policy import EMBEDDED, load_policy, make_backend, resolve_backend, resolve_model
from selfplay.policy.loading import pick_dtype
from selfplay.roles import PromptTemplate
from selfplay.train.precision import master_dtype
from selfplay.train.updater import Updater, add_lora
from selfplay.verify import Verifier, sandbox

log = logging.getLogger(__name__)


def load_trainable_policy(config: SelfPlayConfig, checkpoint: rundir.Checkpoint | None):
    """The policy to train: from the checkpoint being resumed, else from config.model; LoRA-wrapped if asked.
    Full fine-tuning loads fp32 master weights whatever the compute dtype (train/precision.py)."""
    weights = master_dtype(config.dtype, config.lora)
    if checkpoint is not None and not checkpoint.is_lora:
        return load_policy(str(checkpoint.model_dir), config.device, weights, config.attention)
    model, tokenizer = load_policy(config.model, config.device, weights, config.attention)
    if checkpoint is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, checkpoint.adapter_dir, is_trainable=True), tokenizer
    return (add_lora(model, config) if config.lora else model), tokenizer


def kl_reference(config: SelfPlayConfig, ranks: Ranks):
    """The KL term's reference for a full fine-tune: the initial policy (config.model, never the checkpoint being
    resumed), frozen, in the compute dtype, sharded like the policy. It costs one more copy of the weights (a
    shard of one with FSDP); LoRA needs none."""
    if config.kl_beta == 0 or config.lora:
        return None
    return ranks.shard(load_policy(config.model, config.device, config.dtype, config.attention)[0].requires_grad_(False))


def check_sharded(config: SelfPlayConfig) -> None:
    """What a run with sharded weights (FSDP2 or ZeRO-3) needs, checked before any model loads."""
    if resolve_backend(config.generation_backend) == "transformers":
        raise ConfigError("the accelerate config shards the weights, and the transformers backend would generate "
                          "from them one forward pass at a time on every rank in step: use generation_backend "
                          "'vllm' (or 'auto' with vllm installed), or experiments/accelerate/ddp.yaml")
    if config.dtype == "float16":
        raise ConfigError("config key 'dtype' = 'float16': loss scaling is not built for sharded gradients; "
                          "use bfloat16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(config: SelfPlayConfig, resume: bool, ranks: Ranks | None = None) -> SelfPlay:
    """Check everything cheap first (seeds, prompts, model path, run dir), then load models and restore state.
    In a multi-process run every rank builds the same run; the first alone creates or rewinds the run directory."""
    ranks = ranks or Ranks()
    seeds = load_seeds(config.seeds, config.seed_problem_field, config.seed_answer_field)
    teacher_template = PromptTemplate.load(config.teacher_template)
    student_template = PromptTemplate.load(config.student_template)
    restate_template = PromptTemplate.load(config.restate_template) if config.reference_answer == "two_route" else None
    if config.model != EMBEDDED:
        resolve_model(config.model)
    if config.reference_answer == "program":
        sandbox.require()
    if ranks.sharded:
        check_sharded(config)
    if config.async_generation and resolve_backend(config.generation_backend) == "transformers":
        raise ConfigError("config key 'async_generation' = true needs a vLLM backend (vllm or vllm-server): the "
                          "transformers backend samples from the model being trained")
    probe = load_probe(config.probe) if config.probe_every else []
    anchors = [seed for seed in seeds if seed.answer] if config.anchor_share else []
    if config.anchor_share and not anchors:
        raise ConfigError(f"config key 'anchor_share' = {config.anchor_share}: no problem of the seed set "
                          f"{config.seeds} has an answer to anchor the students to")
    heldout = []
    if config.eval_every:
        from selfplay.eval.benchmarks import load_benchmark, resolve_benchmarks_dir

        heldout = load_benchmark(config.eval_benchmark, resolve_benchmarks_dir(config.benchmarks_dir),
                                 limit=config.eval_limit)
    run_dir = Path(config.output_dir)
    if ranks.is_main:
        rundir.prepare(run_dir, resume)
        if resume:
            rundir.rewind(run_dir, config)
    ranks.barrier()
    log_file = logs.to_file(run_dir / rundir.LOG) if ranks.is_main else None
    checkpoint = rundir.latest_checkpoint(run_dir) if resume else None

    seed_everything(config.seed)  # the run's seed: every rank builds the same model (LoRA's random init too)
    model, tokenizer = load_trainable_policy(config, checkpoint)
    model = ranks.shard(model)  # before the optimizer is built on its parameters
    # Each rank samples its own share, so each has its own stream from here on; `SelfPlay.rng` (what the teacher
    # is shown) is the run's, the same on every rank.
    seed_everything(config.seed + ranks.rank)
    embedder = Embedder(config.embedder)
    writes = rundir.archive_dir(run_dir) if ranks.is_main else None  # every rank holds them, the first writes them
    archive = Archive(embedder.dim, config.index_type, config.index_storage, config.index_exact_limit, writes)
    pool = Pool(archive, config.pool_max_size, writes)
    selfplay = SelfPlay(
        config=config,
        run_dir=run_dir,
        model=model,
        tokenizer=tokenizer,
        backend=make_backend(config, model, tokenizer, resolve_model(config.model), config.temperature, config.top_p,
                             config.generation_batch_size, config.seed + ranks.rank, ranks.world, ranks.rank),
        embedder=embedder,
        verifier=Verifier(config.verify_timeout, config.verify_workers),
        pool=pool,
        archive=archive,
        updater=Updater(model, config, tokenizer.pad_token_id, pick_dtype(config.dtype, model.device),
                        kl_reference(config, ranks), ranks),
        teacher_template=teacher_template,
        student_template=student_template,
        restate_template=restate_template,
        rng=np.random.default_rng(config.seed),
        ranks=ranks,
        heldout=heldout,
        probe=probe,
        anchors=anchors,
        log_file=log_file,
    )
    if checkpoint is None:
        archive.add(selfplay.embed([s.problem for s in seeds]))
        pool.add([{"problem": s.problem, "answer": s.answer, "concepts": s.concepts, "step": 0, "seed": True}
                  for s in seeds], list(range(len(seeds))))
    else:
        restore(selfplay, checkpoint)
        log.info("resumed from %s (step %d)", checkpoint.path, selfplay.step)
    if ranks.is_main:  # only now: a failed restore leaves the run's saved settings as they were
        rundir.write_config(run_dir, config)
    return selfplay


def restore(selfplay: SelfPlay, checkpoint: rundir.Checkpoint) -> None:
    """Optimizer, schedule, RNGs, archive, pool and counters from `checkpoint` (the weights were loaded with the
    policy; the archive's files were cut back to the checkpoint by `rundir.rewind`)."""
    selfplay.updater.load_state_dict(checkpoint.trainer_state())
    checkpoint.restore_rng(selfplay.rng, selfplay.ranks.rank, selfplay.ranks.world)
    folder = rundir.archive_dir(selfplay.run_dir)
    selfplay.archive.load(folder, checkpoint.state["archive"])
    selfplay.pool.load(folder, checkpoint.state["pool"])
    selfplay.step, selfplay.empty_steps = checkpoint.step, checkpoint.state.get("empty_steps", 0)
    selfplay.updates = selfplay.sampler_version = checkpoint.state.get("updates", 0)  # the backend took them
    selfplay.anchors_drawn = checkpoint.state.get("anchors_drawn", 0)
    selfplay.ready = checkpoint.ahead()


def whole_state_dict(model, ranks: Ranks) -> dict | None:
    """The model's whole weights on the first rank, gathered from every rank's shard (all ranks call it); None
    when the weights are not sharded (the model saves its own)."""
    if not ranks.sharded:
        return None
    # A tied weight (embeddings and LM head) is one parameter under two names; gathered, it would be saved twice.
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)} - dict(model.named_parameters()).keys()
    if ranks.deepspeed:  # ZeRO-3: the state dict holds placeholders for the parameters; buffers are whole
        parameters = dict(model.named_parameters())
        weights = {name: (whole(parameters[name]) if name in parameters else tensor).cpu()
                   for name, tensor in model.state_dict().items() if name not in aliases}
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {name: tensor for name, tensor in weights.items() if name not in aliases}


def save_checkpoint(selfplay: SelfPlay) -> None:
    """Every rank hands its RNG states to the first, which writes the checkpoint (the rest of the state is the
    same on every rank)."""
    config, ranks = selfplay.config, selfplay.ranks
    rng = ranks.gather([rundir.rng_state(selfplay.rng)])
    weights, trainer_state = whole_state_dict(selfplay.model, ranks), selfplay.updater.state_dict()  # every rank
    if not ranks.is_main:
        return
    rundir.save_checkpoint(
        selfplay.run_dir, selfplay.step, model=selfplay.model, weights=weights, tokenizer=selfplay.tokenizer,
        lora=selfplay.updater.is_lora, trainer_state=trainer_state, rng=rng,
        appended={**selfplay.archive.lengths(), **selfplay.pool.lengths()}, keep=config.keep_checkpoints,
        ahead=selfplay.ready,
        state={"base_model": config.model, "lora": selfplay.updater.is_lora, "empty_steps": selfplay.empty_steps,
               "updates": selfplay.updates, "anchors_drawn": selfplay.anchors_drawn,
               "pool_size": len(selfplay.pool), "archive_size": len(selfplay.archive), "archive": selfplay.archive.state(),
               "pool": selfplay.pool.state()},
    )


def run(config: SelfPlayConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run self-play until `max_steps` (or forever when 0); returns the run directory."""
    ranks = Ranks()
    try:
        return run_steps(build(config, resume, ranks), progress)
    finally:
        ranks.close()


def run_steps(selfplay: SelfPlay, progress: bool) -> Path:
    from tqdm import tqdm

    from selfplay.tracking import Tracker

    config, main = selfplay.config, selfplay.ranks.is_main
    tracker = Tracker(config, rundir.run_id(selfplay.run_dir), selfplay.run_dir, active=main)
    bar = tqdm(total=config.max_steps or None, initial=selfplay.step, disable=not (progress and main), unit="step")
    try:
        while not config.max_steps or selfplay.step < config.max_steps:
            metrics = selfplay.run_step()
            if selfplay.step % config.save_every == 0 or selfplay.step == config.max_steps:
                save_checkpoint(selfplay)
            tracker.log(metrics)
            bar.update(1)
            bar.set_postfix(
                valid=f"{metrics['teacher/valid_fraction']:.2f}",
                solve=f"{metrics.get('student/solve_rate_mean') or 0:.2f}",
                band=f"{metrics.get('teacher/in_band_fraction') or 0:.2f}",
                pool=metrics["pool/size"],
            )
    finally:
        bar.close()
        tracker.finish()
        if selfplay.ahead is not None:  # a step failed while the next one was being written: let it finish
            selfplay.ahead.written.exception()
        selfplay.verifier.close()
        selfplay.backend.close()
        if selfplay.log_file is not None:
            logging.getLogger().removeHandler(selfplay.log_file)
            selfplay.log_file.close()
    return selfplay.run_dir
