"""The scale sheet in experiments/README.md: memory per GPU and expected seconds per optimizer step of the
reference's recipe (experiments/opensir-llama3b.yaml, read here: 8 rounds of 8 x 8 teacher completions and up to
64 x 8 student solutions, 2048 new tokens at most, 2 teacher and 2 student groups of 8 trained per round) for
three model sizes on 1, 2 and 8 H100s, data parallel (DDP), and the memory of full fine-tuning with the training
states sharded (FSDP2).

    python experiments/scale_sheet.py

These are estimates from first principles, not measurements (no GPU was at hand): decoding is bound by memory
traffic (the weights plus the KV cache of the active batch, read once per generated token), training by FLOPs.
The constants below say what is assumed; change them for another GPU. The last line is one JSON object.
"""

import json
from pathlib import Path

from selfplay.config import SelfPlayConfig, read_yaml_config

GPU = {"name": "H100 SXM", "memory_gb": 80, "bandwidth_gbs": 3350, "bf16_tflops": 989, "allreduce_gbs": 300}
DECODE_EFFICIENCY = 0.5  # achieved share of peak bandwidth while decoding (vLLM with CUDA graphs: 0.5-0.7)
MIN_DECODE_STEP = 0.003  # seconds: a decode step of a small model is bound by kernel launches, not bytes
TRAIN_MFU = 0.35  # achieved share of peak FLOPs in the forward/backward passes
OTHER_SECONDS = 2.0  # per round: embedding, novelty, verification, logging (and the weight sync)
MODELS = {  # parameters, layers, KV heads, head dim, vocabulary
    "Qwen2.5-0.5B": (0.494e9, 24, 2, 64, 151936),
    "Llama-3.2-3B": (3.21e9, 28, 8, 128, 128256),
    "Qwen2.5-7B": (7.62e9, 28, 4, 128, 152064),
}
PROMPT, MAX_NEW, MEAN_NEW = 300, 2048, 1200  # tokens; completions average MEAN_NEW of MAX_NEW
RECIPE = SelfPlayConfig(**read_yaml_config(Path(__file__).with_name("opensir-llama3b.yaml")))
PER_UPDATE, ROUNDS, MICRO_BATCH = RECIPE.per_update(), RECIPE.rounds_per_update, RECIPE.train_micro_batch_size
TEACHER, STUDENT = PER_UPDATE["teacher_completions"] // ROUNDS, PER_UPDATE["student_solutions"] // ROUNDS  # a round
TRAINED_ROWS = PER_UPDATE["teacher_rows"] + PER_UPDATE["student_rows"]  # an optimizer step
VLLM_SHARE = 0.3  # vllm_gpu_memory_utilization: the engine's weights and KV cache


def memory_gb(params: float, layers: int, vocab: int, hidden: int, lora: bool, shards: int = 1) -> dict:
    """Per GPU. DDP (shards 1) keeps the whole model on every GPU; FSDP2 (experiments/accelerate/fsdp2.yaml)
    splits the training states over `shards` GPUs, and one decoder layer is gathered whole at a time."""
    if lora:  # frozen bf16 base, small fp32 adapter with its Adam state; the KL reference is the base itself
        states = 2 * params + 16 * 0.01 * params
    else:  # fp32 master weights, fp32 gradients, Adam's two moments, a bf16 KL reference
        states = 16 * params + 2 * params
    if shards > 1:
        states = states / shards + 4 * params / layers  # plus the layer being computed, gathered in fp32
    tokens = MICRO_BATCH * (PROMPT + MAX_NEW)
    # checkpointed hidden states per layer, plus the bf16 logits of the completion window and their gradient
    activations = tokens * hidden * 2 * layers + 2 * MICRO_BATCH * MAX_NEW * vocab * 2
    engine = VLLM_SHARE * GPU["memory_gb"] * 1e9
    total = states + activations + engine
    return {"training_states": states / 1e9, "activations": activations / 1e9, "vllm": engine / 1e9,
            "total": total / 1e9, "fits": total / 1e9 <= GPU["memory_gb"] * 0.95}


def decode_seconds(params: float, kv_bytes_per_token: float, batch: float) -> float:
    """One generation phase: MAX_NEW decode steps (the longest completion sets its length); sequences that end
    leave the batch, so the active batch averages batch x MEAN_NEW / MAX_NEW."""
    active = batch * MEAN_NEW / MAX_NEW
    context = PROMPT + MEAN_NEW / 2
    traffic = 2 * params + active * context * kv_bytes_per_token
    return MAX_NEW * max(traffic / (GPU["bandwidth_gbs"] * 1e9 * DECODE_EFFICIENCY), MIN_DECODE_STEP)


def step_seconds(params: float, layers: int, kv_heads: int, head_dim: int, gpus: int, share: int) -> dict:
    """One optimizer step: ROUNDS generation rounds, then the update. `share`: the GPUs the recipe's step is split
    over (`gpus` for the same step on more GPUs; 1 when the step grows with the GPU count, teacher_prompts x
    gpus)."""
    kv = layers * 2 * kv_heads * head_dim * 2  # bytes per token, bf16 keys and values
    generation = ROUNDS * (decode_seconds(params, kv, TEACHER / share) + decode_seconds(params, kv, STUDENT / share))
    tokens = TRAINED_ROWS * (PROMPT + MEAN_NEW) / share
    flops = (8 + 2) * params * tokens  # forward, backward, checkpoint recompute; the KL reference's forward
    training = flops / (GPU["bf16_tflops"] * 1e12 * TRAIN_MFU)
    allreduce = 0 if gpus == 1 else 2 * (gpus - 1) / gpus * 4 * params / (GPU["allreduce_gbs"] * 1e9)
    total = generation + training + allreduce + ROUNDS * OTHER_SECONDS
    return {"generation": round(generation, 1), "training": round(training + allreduce, 1), "total": round(total, 1)}


def main() -> None:
    sheet = {}
    for name, (params, layers, kv_heads, head_dim, vocab) in MODELS.items():
        hidden = int((params / (12 * layers)) ** 0.5)  # d_model from 12 L d^2 parameters
        sheet[name] = {
            "memory_gb_full": {k: round(v, 1) if isinstance(v, float) else v
                               for k, v in memory_gb(params, layers, vocab, hidden, lora=False).items()},
            "memory_gb_lora": {k: round(v, 1) if isinstance(v, float) else v
                               for k, v in memory_gb(params, layers, vocab, hidden, lora=True).items()},
            "memory_gb_full_fsdp2": {gpus: {k: round(v, 1) if isinstance(v, float) else v for k, v in
                                            memory_gb(params, layers, vocab, hidden, False, gpus).items()}
                                     for gpus in (2, 8)},
            "step_seconds": {gpus: step_seconds(params, layers, kv_heads, head_dim, gpus, gpus) for gpus in (1, 2, 8)},
            "step_seconds_samples_x_gpus": {gpus: step_seconds(params, layers, kv_heads, head_dim, gpus, 1)
                                            for gpus in (1, 2, 8)},
        }
        one = sheet[name]["step_seconds"][1]["total"]
        sheet[name]["scaling_efficiency"] = {g: round(one / (g * s["total"]), 2)
                                             for g, s in sheet[name]["step_seconds"].items()}
        sheet[name]["scaling_efficiency_samples_x_gpus"] = {
            g: round(one / s["total"], 2) for g, s in sheet[name]["step_seconds_samples_x_gpus"].items()}
    for name, row in sheet.items():
        print(name, row)
    print(json.dumps({"gpu": GPU["name"], "sheet": sheet}))


if __name__ == "__main__":
    main()
