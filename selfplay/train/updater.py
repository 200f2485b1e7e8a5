"""The GRPO-style optimizer step over one batch of teacher and student rows."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from selfplay.config import SelfPlayConfig
from selfplay.distributed import Ranks, whole
from selfplay.train.loss import policy_loss, token_logprobs
from selfplay.train.precision import Precision

log = logging.getLogger(__name__)


@dataclass
class TrainRow:
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    role: str  # "teacher" or "student"
    sampler_logprobs: list[float]  # per completion token, as the generation backend sampled it
    loss_mask: list[bool] | None = None  # per completion token, False: kept out of the loss; None: all trained

    @property
    def trained_tokens(self) -> int:
        return len(self.completion_ids) if self.loss_mask is None else sum(self.loss_mask)


@dataclass
class Batch:
    """One micro-batch. Log-prob tensors cover positions `start`..width-2 of `ids` (position t scores token t+1)."""

    ids: torch.Tensor
    attention: torch.Tensor
    start: int
    completion: torch.Tensor  # loss mask over the window
    sampler: torch.Tensor  # the sampler's log-probs over the window


def role_token_weights(rows: list[TrainRow]) -> list[float]:
    """Per-row token weight so that each role's loss is its own token mean and the roles count equally:
    the reference pooled all tokens, so the role with longer completions dominated the update."""
    tokens: dict[str, int] = {}
    for row in rows:
        tokens[row.role] = tokens.get(row.role, 0) + row.trained_tokens
    return [1.0 / (len(tokens) * max(tokens[row.role], 1)) for row in rows]


def add_lora(model, config: SelfPlayConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        target_modules=[m.strip() for m in config.lora_target_modules.split(",") if m.strip()],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


class Updater:
    """`compute_dtype`: the dtype forward passes compute in (the model's own weights may be fp32 masters, see
    `precision.py`). `reference`: the frozen initial policy for the KL term of a full fine-tune (LoRA needs none:
    its reference is the adapter switched off). `ranks`: in a multi-process run, each rank trains on its share of
    the rows and the gradients are summed before the optimizer step, so every rank takes the same step."""

    def __init__(self, model, config: SelfPlayConfig, pad_token_id: int, compute_dtype: torch.dtype = torch.float32,
                 reference=None, ranks: Ranks | None = None):
        self.model, self.config, self.pad = model, config, pad_token_id
        self.ranks = ranks or Ranks()
        self.precision = Precision(compute_dtype, next(model.parameters()).device)
        self.scaler = self.precision.grad_scaler()
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Optimizer steps the schedule spans. Fixed by the run's first start: a resume restores it (load_state_dict).
        self.horizon = config.max_steps * config.updates_per_step if config.max_steps else 10**9
        self.scheduler = self._schedule()
        self.is_lora = hasattr(model, "disable_adapter")
        if config.kl_beta > 0 and not self.is_lora and reference is None:
            raise ValueError("a full fine-tune with kl_beta > 0 needs its initial policy as the KL reference")
        self.reference = reference

    def _batch(self, rows: list[TrainRow]) -> Batch:
        """Right-padded input ids and attention mask; the completion mask and the sampler's log-probs, aligned
        with next-token log-probs and cut to the window from the earliest completion token on."""
        width = max(len(r.prompt_ids) + len(r.completion_ids) for r in rows)
        start = min(len(r.prompt_ids) for r in rows) - 1  # the first log-prob position any completion needs
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width - 1))
        sampler = torch.zeros((len(rows), width - 1))
        for i, row in enumerate(rows):
            sequence = row.prompt_ids + row.completion_ids
            ids[i, : len(sequence)] = torch.tensor(sequence)
            attention[i, : len(sequence)] = 1
            # log-prob index t scores token t+1, so completion tokens P..P+C-1 sit at P-1..P+C-2.
            completion[i, len(row.prompt_ids) - 1 : len(sequence) - 1] = 1 if row.loss_mask is None else torch.tensor(
                row.loss_mask, dtype=completion.dtype)
            sampler[i, len(row.prompt_ids) - 1 : len(sequence) - 1] = torch.tensor(row.sampler_logprobs)
        device = self.model.device
        return Batch(ids.to(device), attention.to(device), start, completion[:, start:].to(device),
                     sampler[:, start:].to(device))

    def _logprobs(self, model, batch: Batch) -> torch.Tensor:
        """Log-probs of the window's next tokens, in fp32: the model computes logits for the window only
        (`logits_to_keep`), never for the prompt positions before it."""
        with self.precision.autocast():
            logits = model(input_ids=batch.ids, attention_mask=batch.attention,
                           logits_to_keep=batch.ids.shape[1] - batch.start).logits
        return token_logprobs(logits[:, :-1], batch.ids[:, batch.start + 1 :], self.config.temperature)

    @torch.no_grad()
    def _frozen_logprobs(self, batch: Batch, reference: bool) -> torch.Tensor:
        if not reference:
            return self._logprobs(self.model, batch)
        if self.is_lora:
            with self.model.disable_adapter():
                return self._logprobs(self.model, batch)
        return self._logprobs(self.reference, batch)

    def step(self, rows: list[TrainRow]) -> dict[str, float]:
        """Update on `rows` (already filtered to groups with signal, the same on every rank); returns loss
        statistics over all ranks."""
        config = self.config
        rows = sorted(rows, key=lambda r: len(r.prompt_ids) + len(r.completion_ids))
        weights = role_token_weights(rows)  # over all rows: each rank's loss is its part of the full-batch loss
        mine = rows[self.ranks.rank :: self.ranks.world]  # dealt out in length order, so shares cost alike
        weights = weights[self.ranks.rank :: self.ranks.world]
        size = config.train_micro_batch_size
        chunks = [list(range(i, min(i + size, len(mine)))) for i in range(0, len(mine), size)]
        real = len(chunks)  # the statistics cover these; the padding below trains nothing
        if self.ranks.sharded:
            # Every forward pass gathers the weights from all ranks, so every rank must run as many as the first
            # (which holds the most rows): a rank short of rows repeats a row of the batch at weight 0.
            first_rank_rows = -(-len(rows) // self.ranks.world)
            while len(chunks) < -(-first_rank_rows // size):
                mine, weights = mine + [rows[0]], weights + [0.0]
                chunks.append([len(mine) - 1])
        batches = [self._batch([mine[i] for i in chunk]) for chunk in chunks]
        # With one update per batch the sampling policy is the current one, so old log-probs are the current
        # ones detached (ratio 1); with several, they are frozen once before the first update.
        old = [self._frozen_logprobs(batch, False) for batch in batches] if config.updates_per_step > 1 else None
        refs = [self._frozen_logprobs(batch, True) for batch in batches] if config.kl_beta > 0 else None
        self.model.train()
        averaged = ("clip_fraction", "kl", "sampler_trainer_logprob_gap", "is_truncated_fraction")
        sums = {"loss": 0.0} | dict.fromkeys(averaged, 0.0)  # this rank's, over its micro-batches and updates
        grad_norm_sum, skipped = 0.0, 0
        for _ in range(config.updates_per_step):
            for b, (chunk, batch) in enumerate(zip(chunks, batches)):
                logprobs = self._logprobs(self.model, batch)
                device = logprobs.device
                loss, stats = policy_loss(
                    logprobs,
                    old[b] if old is not None else logprobs.detach(),
                    torch.tensor([mine[i].advantage for i in chunk], device=device),
                    batch.completion,
                    torch.tensor([weights[i] for i in chunk], device=device).unsqueeze(1),
                    config.clip_epsilon,
                    refs[b] if refs is not None else None,
                    config.kl_beta,
                    batch.sampler,
                    config.importance_sampling_cap,
                )
                self.scaler.scale(loss * self.ranks.loss_scale).backward()
                if b < real:
                    sums["loss"] += loss.item()
                    for key in averaged:
                        sums[key] += stats[key]
            self.ranks.sum_gradients(self.trainable)
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(whole(torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)))
            grad_norm_sum += grad_norm
            if math.isfinite(grad_norm):
                self.scaler.step(self.optimizer)
                self.scheduler.step()
            else:  # a NaN or inf gradient must not reach the weights; the schedule waits for a real update
                skipped += 1
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        if skipped:
            log.warning("%d of %d optimizer steps skipped: non-finite gradient norm", skipped, config.updates_per_step)
        self.model.eval()
        n = config.updates_per_step
        every = self.ranks.gather([(sums, real)])
        batches_seen = max(sum(count for _, count in every), 1) * n
        return ({"loss": sum(s["loss"] for s, _ in every) / n, "grad_norm": grad_norm_sum / n}
                | {key: sum(s[key] for s, _ in every) / batches_seen for key in averaged}
                | {"lr": self.scheduler.get_last_lr()[0], "skipped_steps": skipped})

    def _schedule(self):
        """The learning-rate schedule over `horizon` optimizer steps; past it, the rate stays at its final value
        (transformers' cosine would rise again)."""
        from transformers import get_scheduler

        schedule = get_scheduler(self.config.lr_schedule, self.optimizer, self.config.warmup_steps, self.horizon)
        schedule.lr_lambdas = [lambda step, factor=factor: factor(min(step, self.horizon))
                               for factor in schedule.lr_lambdas]
        return schedule

    def state_dict(self) -> dict:
        """The optimizer's state in full (gathered from every rank when sharded: all ranks must call this)."""
        return {"optimizer": self._optimizer_state(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "horizon": self.horizon}

    def _optimizer_state(self) -> dict:
        if not self.ranks.sharded:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_state_dict(self, state: dict) -> None:
        if state["horizon"] != self.horizon:
            if self.config.lr_schedule != "constant":
                log.warning("--max-steps changed since the run's first start: the run goes on to step %d, and the "
                            "'%s' learning-rate schedule keeps the first start's horizon of %d optimizer steps "
                            "(past it, the rate stays at the schedule's final value)", self.config.max_steps,
                            self.config.lr_schedule, state["horizon"])
            self.horizon = state["horizon"]
            self.scheduler = self._schedule()
        if self.ranks.sharded:  # each rank keeps its shard of the full state
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


__all__ = ["TrainRow", "Updater", "add_lora", "role_token_weights"]
