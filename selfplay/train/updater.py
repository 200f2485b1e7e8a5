"""The GRPO-style optimizer step over one batch of teacher and student rows."""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass

import torch

from selfplay.config import SelfPlayConfig
from selfplay.distributed import Ranks, whole
from selfplay.train import zero3
from selfplay.train.loss import TOKEN_SUMS, LossSettings, policy_loss, row_weights, token_logprobs
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
    """One micro-batch: rows that share one prompt, their completions right-padded. Log-prob tensors [B, W] score
    the completion tokens (window position t is completion token t)."""

    prompt: torch.Tensor  # [P]
    completions: torch.Tensor  # [B, W]
    attention: torch.Tensor  # [B, W] 1 on completion tokens
    completion: torch.Tensor  # [B, W] loss mask
    sampler: torch.Tensor  # [B, W] the sampler's log-probs


def micro_batches(rows: list[TrainRow], size: int) -> list[list[int]]:
    """Indices of `rows` in micro-batches of at most `size` rows that share their prompt (a problem's solutions, a
    teacher prompt's samples), so that the prompt is computed once per micro-batch, not once per row; within a
    prompt, by completion length, so little goes to padding. Largest first: dealt round-robin, ranks share alike."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(rows):
        by_prompt.setdefault(tuple(row.prompt_ids), []).append(i)
    batches = []
    for indices in by_prompt.values():
        indices.sort(key=lambda i: len(rows[i].completion_ids))
        batches += [indices[k: k + size] for k in range(0, len(indices), size)]
    return sorted(batches, key=lambda b: -sum(len(rows[i].prompt_ids) + len(rows[i].completion_ids) for i in b))


def disable_dropout(model) -> None:
    """No dropout in the trained policy: the sampler and pi_old have none, so a loss computed with it would see a
    ratio far from 1 on the first pass (0.05 off at dropout 0.3). Dropout modules get p = 0, and attention layers'
    own dropout rates (read in their forward while training) 0."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "attn_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


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
        disable_dropout(model)
        self.loss_settings = LossSettings(
            clip_low=config.clip_epsilon, clip_high=config.clip_epsilon_high or config.clip_epsilon,
            importance_sampling_level=config.importance_sampling_level,
            sampler_correction=config.importance_sampling_mode, sampler_cap=config.importance_sampling_cap,
            kl_beta=config.kl_beta)
        self.max_tokens = {"teacher": config.teacher_max_new_tokens, "student": config.student_max_new_tokens}
        self.precision = Precision(compute_dtype, next(model.parameters()).device)
        self.scaler = self.precision.grad_scaler()
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.shares_prompt = config.shared_prompt and not config.gradient_checkpointing and not self.ranks.fsdp
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        # DeepSpeed ZeRO-3: an engine partitions the model and steps the optimizer (train/zero3.py); forward
        # passes go through it, the rest of selfplay keeps using the model (its parameters gathered as needed).
        self.engine = zero3.engine(model, self.optimizer, config, self.ranks) if self.ranks.deepspeed else None
        # Optimizer steps the schedule spans. Fixed by the run's first start: a resume restores it (load_state_dict).
        # The schedule follows the run's progress: it advances on every step, also one without rows to train on
        # (`skip`) or whose update was not finite, so that it ends where the run does.
        self.horizon = config.max_steps * config.updates_per_step if config.max_steps else 10**9
        self.scheduler = self._schedule()
        self.is_lora = hasattr(model, "disable_adapter")
        if config.kl_beta > 0 and not self.is_lora and reference is None:
            raise ValueError("a full fine-tune with kl_beta > 0 needs its initial policy as the KL reference")
        if self.ranks.deepspeed and reference is not None:
            reference = zero3.engine(reference, None, config, self.ranks)  # partitioned, for forward passes only
        self.reference = reference

    def _batch(self, rows: list[TrainRow]) -> Batch:
        """`rows` share one prompt."""
        width = max(len(r.completion_ids) for r in rows)
        completions = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        completion = torch.zeros((len(rows), width))
        sampler = torch.zeros((len(rows), width))
        for i, row in enumerate(rows):
            length = len(row.completion_ids)
            completions[i, :length] = torch.tensor(row.completion_ids)
            attention[i, :length] = 1
            completion[i, :length] = 1 if row.loss_mask is None else torch.tensor(row.loss_mask, dtype=completion.dtype)
            sampler[i, :length] = torch.tensor(row.sampler_logprobs)
        device = self.model.device
        return Batch(torch.tensor(rows[0].prompt_ids, device=device), completions.to(device), attention.to(device),
                     completion.to(device), sampler.to(device))

    def _logprobs(self, model, batch: Batch) -> torch.Tensor:
        """fp32 log-probs of the completion tokens. The prompt but its last token is computed once and its keys and
        values are shared by every row (gradients flow through them); the rows then run from the prompt's last token
        on, whose logits score the first completion token. Without `shared_prompt`, or with gradient checkpointing
        (whose recomputation would append to a shared cache twice), or under FSDP2 (which frees a layer's gathered
        weights after each forward and gathers them once for the backward, so the backward of the first of two
        forwards finds them gone), each row runs whole, its logits kept from the prompt's last token on."""
        rows, prompt = len(batch.completions), batch.prompt
        with self.precision.autocast():
            if not self.shares_prompt:
                ids = torch.cat([prompt.expand(rows, -1), batch.completions], dim=1)
                attention = torch.cat([torch.ones_like(prompt).expand(rows, -1), batch.attention], dim=1)
                logits = model(input_ids=ids, attention_mask=attention,
                               logits_to_keep=batch.completions.shape[1] + 1).logits
            else:
                # only the cache is used: one position's logits, not the vocabulary at every prompt token
                cache = model(input_ids=prompt[None, :-1], use_cache=True, logits_to_keep=1).past_key_values
                cache.batch_repeat_interleave(rows)
                ids = torch.cat([prompt[-1:].expand(rows, 1), batch.completions], dim=1)
                attention = torch.cat([torch.ones_like(prompt).expand(rows, -1), batch.attention], dim=1)
                positions = torch.arange(len(prompt) - 1, len(prompt) + ids.shape[1] - 1, device=ids.device)
                logits = model(input_ids=ids, attention_mask=attention, past_key_values=cache,
                               position_ids=positions.expand(rows, -1)).logits
        return token_logprobs(logits[:, :-1], batch.completions, self.config.temperature)

    @torch.no_grad()
    def trainer_logprobs(self, rows: list[TrainRow]) -> list[list[float]]:
        """The log-probs the loss sees for each row's completion tokens (at the sampling temperature, in the
        compute dtype): what the sampler's recorded log-probs must match."""
        logprobs: list[list[float]] = [[] for _ in rows]
        for chunk in micro_batches(rows, self.config.train_micro_batch_size):
            window = self._logprobs(self.model, self._batch([rows[i] for i in chunk]))
            for k, i in enumerate(chunk):
                logprobs[i] = window[k, : len(rows[i].completion_ids)].tolist()
        return logprobs

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
        statistics over all ranks: token means over the whole batch, the loss, the gradient norm, and the learning
        rate the update used."""
        config = self.config
        weights = row_weights([r.role for r in rows], [r.trained_tokens for r in rows], config.loss_type,
                              self.max_tokens)  # over all rows: each rank's loss is its part of the full-batch loss
        trained = [i for i, r in enumerate(rows) if r.trained_tokens]  # a row with none adds nothing
        rows, weights = [rows[i] for i in trained], [weights[i] for i in trained]
        every = micro_batches(rows, config.train_micro_batch_size)
        chunks = every[self.ranks.rank :: self.ranks.world]  # dealt out largest first, so shares cost alike
        real = len(chunks)  # the statistics cover these; the padding below trains nothing
        if self.ranks.sharded and every:
            # Every forward pass gathers the weights from all ranks, so every rank must run as many as the first
            # (which holds the most micro-batches): a rank short of them repeats one of the batch at weight 0.
            padding = list(range(len(rows), len(rows) + len(every[0])))
            rows, weights = rows + [rows[i] for i in every[0]], weights + [0.0] * len(every[0])
            chunks += [padding] * (-(-len(every) // self.ranks.world) - len(chunks))
        batches = [self._batch([rows[i] for i in chunk]) for chunk in chunks]
        # With one update per batch the sampling policy is the current one, so old log-probs are the current
        # ones detached (ratio 1); with several, they are frozen once before the first update.
        old = [self._frozen_logprobs(batch, False) for batch in batches] if config.updates_per_step > 1 else None
        refs = [self._frozen_logprobs(batch, True) for batch in batches] if config.kl_beta > 0 else None
        self.model.train()
        sums = {"loss": 0.0} | dict.fromkeys(TOKEN_SUMS, 0.0)  # this rank's, over its micro-batches and updates
        grad_norm_sum, skipped, learning_rate = 0.0, 0, self.scheduler.get_last_lr()[0]
        for _ in range(config.updates_per_step):
            for b, (chunk, batch) in enumerate(zip(chunks, batches)):
                logprobs = self._logprobs(self.engine or self.model, batch)
                device = logprobs.device
                loss, token_sums = policy_loss(
                    logprobs,
                    old[b] if old is not None else logprobs.detach(),
                    torch.tensor([rows[i].advantage for i in chunk], device=device),
                    batch.completion,
                    torch.tensor([weights[i] for i in chunk], device=device).unsqueeze(1),
                    self.loss_settings,
                    refs[b] if refs is not None else None,
                    batch.sampler,
                )
                self._backward(loss * self.ranks.loss_scale, last=b == len(chunks) - 1)
                if b < real:
                    sums["loss"] += loss.item()
                    for key in TOKEN_SUMS:
                        sums[key] += token_sums[key]
            grad_norm = self._optimizer_step()
            grad_norm_sum += grad_norm
            skipped += not math.isfinite(grad_norm)
            self._advance_schedule()
        if skipped:
            log.warning("%d of %d optimizer steps skipped: non-finite gradient norm", skipped, config.updates_per_step)
        self.model.eval()
        n = config.updates_per_step
        total = {key: sum(every[key] for every in self.ranks.gather([sums])) for key in sums}
        tokens = max(total["tokens"], 1.0)
        return {"loss": total["loss"] / n, "grad_norm": grad_norm_sum / n,
                "clip_fraction": total["clipped_tokens"] / tokens, "kl": total["kl_sum"] / tokens,
                "sampler_trainer_logprob_gap": total["sampler_gap_sum"] / tokens,
                "is_truncated_fraction": total["sampler_corrected_tokens"] / tokens,
                "lr": learning_rate, "skipped_steps": skipped}

    def skip(self) -> None:
        """A step without rows to train on: the schedule still advances, as the run's progress does."""
        for _ in range(self.config.updates_per_step):
            self._advance_schedule()

    def _advance_schedule(self) -> None:
        with warnings.catch_warnings():  # torch warns when no optimizer step came first: here that is by design
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        """Gradients of one micro-batch's loss, added to the step's; `last`: the optimizer step's last one."""
        if self.engine is None:
            self.scaler.scale(loss).backward()
            return
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)

    def _optimizer_step(self) -> float:
        """Sum the gradients over ranks, clip them to `max_grad_norm` and update the weights, unless their norm is
        not finite: a NaN or inf gradient must not reach the weights. Returns the norm before clipping."""
        if self.engine is not None:  # the engine has reduced the gradients; it clips, skips and steps alike
            self.engine.step()
            return float(self.engine.get_global_grad_norm())
        self.ranks.sum_gradients(self.trainable)
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(whole(torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)))
        if math.isfinite(grad_norm):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _schedule(self):
        """The learning-rate schedule over `horizon` optimizer steps; past it, the rate stays at its final value
        (transformers' cosine would rise again)."""
        from transformers import get_scheduler

        schedule = get_scheduler(self.config.lr_schedule, self.optimizer, self.config.warmup_steps, self.horizon)
        schedule.lr_lambdas = [lambda step, factor=factor: factor(min(step, self.horizon))
                               for factor in schedule.lr_lambdas]
        return schedule

    def state_dict(self) -> dict:
        """The optimizer's state in full, in one form whatever the engine: torch's, parameters by their index
        among the trainable ones (gathered from every rank when sharded, onto the first at least: all ranks must
        call this). A checkpoint therefore resumes at any world size, with or without FSDP2 or ZeRO-3."""
        return {"optimizer": self._optimizer_state(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "horizon": self.horizon}

    def _optimizer_state(self) -> dict:
        if self.engine is not None:
            return zero3.full_optimizer_state(self.engine, self.optimizer, self.trainable)
        if not self.ranks.fsdp:
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        by_name = get_optimizer_state_dict(self.model, self.optimizer,
                                           options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not by_name:  # it is gathered onto the first rank only
            return by_name
        index = {name: i for i, name in enumerate(self._trainable_names())}
        return {"state": {index[name]: state for name, state in by_name["state"].items()},
                "param_groups": [group | {"params": [index[name] for name in group["params"]]}
                                 for group in by_name["param_groups"]]}

    def _trainable_names(self) -> list[str]:
        """The names of `self.trainable`, in its order (FSDP2's full optimizer state is keyed by them)."""
        return [name for name, p in self.model.named_parameters() if p.requires_grad]

    def load_state_dict(self, state: dict) -> None:
        if state["horizon"] != self.horizon:
            if self.config.lr_schedule != "constant":
                log.warning("--max-steps changed since the run's first start: the run goes on to step %d, and the "
                            "'%s' learning-rate schedule keeps the first start's horizon of %d optimizer steps "
                            "(past it, the rate stays at the schedule's final value)", self.config.max_steps,
                            self.config.lr_schedule, state["horizon"])
            self.horizon = state["horizon"]
            self.scheduler = self._schedule()
        if self.engine is not None:
            zero3.load_full_optimizer_state(self.engine, self.optimizer, self.trainable, state["optimizer"])
        elif self.ranks.fsdp:  # each rank keeps its shard of the full state
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            names, saved = self._trainable_names(), state["optimizer"]
            by_name = {"state": {names[i]: values for i, values in saved["state"].items()},
                       "param_groups": [group | {"params": [names[i] for i in group["params"]]}
                                        for group in saved["param_groups"]]}
            set_optimizer_state_dict(self.model, self.optimizer, by_name, options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


__all__ = ["TrainRow", "Updater", "add_lora", "disable_dropout"]
