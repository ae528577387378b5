"""Checkpoint the optimizer, scheduler and random state as safetensors + JSON, never pickle.

The Hugging Face Trainer stores these with ``torch.save`` (pickle). tunescope's rule is that
nothing is ever unpickled, so for the ordinary single-device and DDP cases these functions
replace the Trainer's; DeepSpeed and FSDP keep their own checkpoint formats.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng_state{suffix}.safetensors"


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Write optimizer tensors to safetensors; param groups and scheduler state go in its metadata."""
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    meta["scheduler"] = scheduler.state_dict() if scheduler is not None else None
    save_file(tensors, str(path), metadata={"tunescope": json.dumps(meta)})


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any, device: Any) -> None:
    """Restore what :func:`save_optimizer` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["tunescope"])
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(str(path), device="cpu").items():
        _, param_id, key = name.split(".", 2)
        # Adam's step counter stays on the CPU, as torch keeps it; moments go to the parameters' device.
        state.setdefault(int(param_id), {})[key] = tensor if key == "step" else tensor.to(device)
    for param_id, values in meta["plain_state"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])


def save_rng_state(path: Path) -> None:
    """Write the Python, NumPy, torch CPU and CUDA generator states."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "torch_cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = cuda_state
    meta = {"python": [version, gauss], "numpy": [kind, position, has_gauss, cached]}
    save_file(tensors, str(path), metadata={"tunescope": json.dumps(meta)})


def load_rng_state(path: Path) -> None:
    """Restore what :func:`save_rng_state` wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["tunescope"])
    tensors = load_file(str(path))
    version, gauss = meta["python"]
    random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    kind, position, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, cached))
    torch.random.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def is_complete(checkpoint: Path) -> bool:
    """True when the Trainer finished writing ``checkpoint`` (its state file comes last)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The completed ``checkpoint-N`` directory with the largest N, if any."""
    if not checkpoints.is_dir():
        return None
    candidates = [
        path for path in checkpoints.glob("checkpoint-*") if path.name.split("-")[-1].isdigit() and is_complete(path)
    ]
    return max(candidates, key=lambda path: int(path.name.split("-")[-1]), default=None)
