"""Where training and evaluation run, decided once: the device, its precision, and how to say it.

The GPU when there is one, without a flag (``SYNTH_DEVICE`` overrides: ``cpu``, ``cuda:1``);
bfloat16 where the GPU computes it natively, float16 on older GPUs, float32 on the CPU. Under
``torchrun`` / ``accelerate launch`` each process takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "SYNTH_DEVICE"


def best_device() -> torch.device:
    """The GPU of this process when there is one, else the CPU (``SYNTH_DEVICE`` chooses)."""
    wanted = os.environ.get(DEVICE_ENV)
    if wanted:
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def mixed_precision(device: torch.device) -> str | None:
    """``"bf16"``, ``"fp16"`` or None (float32): what the device computes fastest without losing range."""
    if device.type != "cuda":
        return None
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def world_size() -> int:
    """Processes training one model together (``torchrun --nproc_per_node N``, ``accelerate launch``)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def describe(device: torch.device) -> str:
    """One line for the terminal: the device, its precision, the number of processes."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    precision = mixed_precision(device) or "float32"
    processes = world_size()
    many = f", {processes} processes" if processes > 1 else ""
    return f"{device} ({name}, {precision}{many})"
