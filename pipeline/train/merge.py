"""Spherical linear interpolation (slerp) of model checkpoints, as the Qwen3 Embedding paper merges
fine-tuning checkpoints.

Each tensor is treated as one vector: slerp follows the great circle between the two
directions and interpolates the norms linearly, falling back to linear interpolation when
the vectors are nearly parallel. Several checkpoints are merged in sequence with t = 1/k
for the k-th, so every checkpoint gets an equal share.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    if not a.is_floating_point():
        return a.clone()
    va, vb = a.flatten().double(), b.flatten().double()
    na, nb = va.norm(), vb.norm()
    if na < eps or nb < eps:
        return ((1 - t) * va + t * vb).reshape(a.shape).to(a.dtype)
    cos = torch.clamp((va / na) @ (vb / nb), -1.0, 1.0)
    theta = torch.arccos(cos)
    if theta.abs() < 1e-4:
        direction = (1 - t) * va / na + t * vb / nb
    else:
        direction = (torch.sin((1 - t) * theta) * va / na + torch.sin(t * theta) * vb / nb) / torch.sin(theta)
    norm = (1 - t) * na + t * nb
    return (direction / direction.norm() * norm).reshape(a.shape).to(a.dtype)


def slerp_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    merged = dict(states[0])
    for k, state in enumerate(states[1:], start=2):
        merged = {name: slerp(merged[name], state[name], 1.0 / k) for name in merged}
    return merged


def merge_checkpoints(folders: list[Path], out: Path) -> Path:
    """Merge Hugging Face checkpoint folders (model.safetensors) into ``out``, configs from the first."""
    from safetensors.torch import load_file, save_file

    states = [load_file(str(folder / "model.safetensors")) for folder in folders]
    merged = slerp_state_dicts(states)
    shutil.copytree(folders[0], out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in merged.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return out
