"""The GRPO-style optimizer step over one batch of teacher and student rows."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch

from selfplay.config import SelfPlayConfig
from selfplay.train.loss import policy_loss, token_logprobs

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
    def __init__(self, model, config: SelfPlayConfig, pad_token_id: int):
        self.model, self.config, self.pad = model, config, pad_token_id
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        # Optimizer steps the schedule spans. Fixed by the run's first start: a resume restores it (load_state_dict).
        self.horizon = config.max_steps * config.updates_per_step if config.max_steps else 10**9
        self.scheduler = self._schedule()
        self.is_lora = hasattr(model, "disable_adapter")
        # KL reference: with LoRA the base model is the adapter switched off (no copy); otherwise a frozen copy.
        self.reference = None
        if config.kl_beta > 0 and not self.is_lora:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)

    def _batch(self, rows: list[TrainRow]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded input ids, attention mask, and a completion mask and the sampler's log-probs, both aligned
        with next-token log-probs."""
        width = max(len(r.prompt_ids) + len(r.completion_ids) for r in rows)
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
        return ids.to(device), attention.to(device), completion.to(device), sampler.to(device)

    def _logprobs(self, model, ids, attention) -> torch.Tensor:
        return token_logprobs(model(input_ids=ids, attention_mask=attention).logits, ids, self.config.temperature)

    @torch.no_grad()
    def _frozen_logprobs(self, ids, attention, reference: bool) -> torch.Tensor:
        if not reference:
            return self._logprobs(self.model, ids, attention)
        if self.is_lora:
            with self.model.disable_adapter():
                return self._logprobs(self.model, ids, attention)
        return self._logprobs(self.reference, ids, attention)

    def step(self, rows: list[TrainRow]) -> dict[str, float]:
        """Update on `rows` (already filtered to groups with signal); returns loss statistics."""
        config = self.config
        rows = sorted(rows, key=lambda r: len(r.prompt_ids) + len(r.completion_ids))
        weights = role_token_weights(rows)
        size = config.train_micro_batch_size
        chunks = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
        batches = [self._batch([rows[i] for i in chunk]) for chunk in chunks]
        use_kl = config.kl_beta > 0
        # With one update per batch the sampling policy is the current one, so old log-probs are the current
        # ones detached (ratio 1); with several, they are frozen once before the first update.
        old = [self._frozen_logprobs(ids, att, False) for ids, att, _, _ in batches] if config.updates_per_step > 1 else None
        refs = [self._frozen_logprobs(ids, att, True) for ids, att, _, _ in batches] if use_kl else None
        self.model.train()
        averaged = ("clip_fraction", "kl", "sampler_trainer_logprob_gap", "is_truncated_fraction")
        totals = {"loss": 0.0, "grad_norm": 0.0} | dict.fromkeys(averaged, 0.0)
        for _ in range(config.updates_per_step):
            for b, (chunk, (ids, attention, mask, sampler)) in enumerate(zip(chunks, batches)):
                logprobs = self._logprobs(self.model, ids, attention)
                advantages = torch.tensor([rows[i].advantage for i in chunk], device=ids.device)
                token_weights = torch.tensor([weights[i] for i in chunk], device=ids.device).unsqueeze(1)
                loss, stats = policy_loss(
                    logprobs,
                    old[b] if old is not None else logprobs.detach(),
                    advantages,
                    mask,
                    token_weights,
                    config.clip_epsilon,
                    refs[b] if refs is not None else None,
                    config.kl_beta,
                    sampler,
                    config.importance_sampling_cap,
                )
                loss.backward()
                totals["loss"] += loss.item()
                for key in averaged:
                    totals[key] += stats[key] / len(chunks)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], config.max_grad_norm
            )
            totals["grad_norm"] += float(grad_norm) if math.isfinite(float(grad_norm)) else float("nan")
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        n = config.updates_per_step
        return {key: value / n for key, value in totals.items()} | {"lr": self.scheduler.get_last_lr()[0]}

    def _schedule(self):
        """The learning-rate schedule over `horizon` optimizer steps; past it, the rate stays at its final value
        (transformers' cosine would rise again)."""
        from transformers import get_scheduler

        schedule = get_scheduler(self.config.lr_schedule, self.optimizer, self.config.warmup_steps, self.horizon)
        schedule.lr_lambdas = [lambda step, factor=factor: factor(min(step, self.horizon)) for factor in schedule.lr_lambdas]
        return schedule

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        if state["horizon"] != self.horizon:
            if self.config.lr_schedule != "constant":
                log.warning("--max-steps changed since the run's first start: the run goes on to step %d, and the "
                            "'%s' learning-rate schedule keeps the first start's horizon of %d optimizer steps "
                            "(past it, the rate stays at the schedule's final value)", self.config.max_steps,
                            self.config.lr_schedule, state["horizon"])
            self.horizon = state["horizon"]
            self.scheduler = self._schedule()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


__all__ = ["TrainRow", "Updater", "add_lora", "role_token_weights"]
