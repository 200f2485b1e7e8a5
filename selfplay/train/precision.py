"""Numeric precision of training: the dtype the optimizer steps, and the dtype the forward pass computes in.

Full fine-tuning keeps fp32 master weights and computes in the configured dtype under autocast. Stepping bf16
weights directly does not train: AdamW moves each weight by about the learning rate (3e-7 in the reference
setting), far below half a bf16 ulp at a weight of 0.02 (about 6e-5), so almost every update rounds away. LoRA
keeps its frozen base in the compute dtype (only the adapter is stepped, and peft keeps it in fp32). fp16 adds
dynamic loss scaling; bf16 has fp32's range and needs none.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def master_dtype(compute_dtype: str, lora: bool) -> str:
    """The dtype to load the trained policy in: fp32 master weights for full fine-tuning, else the compute dtype."""
    return compute_dtype if lora else "float32"


class Precision:
    def __init__(self, compute: torch.dtype, device: torch.device):
        self.compute, self.device_type = compute, device.type

    def autocast(self):
        """Forward passes in the compute dtype (a no-op in fp32)."""
        if self.compute == torch.float32:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Dynamic loss scaling, on for fp16 only (a disabled scaler passes everything through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.compute == torch.float16)
