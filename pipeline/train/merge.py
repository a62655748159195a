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


INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map of tensor name -> shard file


def checkpoint_files(folder: Path) -> dict[str, list[str]]:
    """Shard file -> tensor names: ``model.safetensors`` alone, or the shards a checkpoint's index names."""
    import json

    from safetensors import safe_open

    if (folder / INDEX).exists():
        weight_map = json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"]
        files: dict[str, list[str]] = {}
        for name, file in weight_map.items():
            files.setdefault(file, []).append(name)
        return files
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder}: no model.safetensors and no {INDEX}")
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return {"model.safetensors": list(handle.keys())}


def load_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in checkpoint_files(folder):
        state.update(load_file(str(folder / file)))
    return state


def merge_checkpoints(folders: list[Path], out: Path) -> Path:
    """Merge Hugging Face checkpoint folders into ``out``, laid out (one file or the same shards) and
    configured like the first."""
    from safetensors.torch import save_file

    states = [load_checkpoint(folder) for folder in folders]
    names = set(states[0])
    for folder, state in zip(folders[1:], states[1:], strict=True):
        if set(state) != names:
            raise ValueError(
                f"{folder}: its tensors are not those of {folders[0]}: not the same architecture"
            )
    merged = slerp_state_dicts(states)
    shutil.copytree(folders[0], out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
    for file, tensors in checkpoint_files(folders[0]).items():
        save_file(
            {name: merged[name].contiguous() for name in tensors}, str(out / file), metadata={"format": "pt"}
        )
    return out
