"""What machine and software a result came from: for bug reports and for every run's provenance."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from tunescope.assets import ASSETS, cache_dir

PACKAGES = (
    "tunescope", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
    "tokenizers", "safetensors", "gguf", "numpy", "pyarrow", "pydantic",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    """Installed version of each package tunescope's results depend on (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """Commit of the tunescope checkout this code runs from (with ``-dirty``), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def device_info() -> dict[str, Any]:
    """Accelerators torch can see, and the CPU threads it uses."""
    import torch

    info: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if info["cuda_available"]:
        info["cuda_devices"] = [
            {
                "name": torch.cuda.get_device_name(index),
                "memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
                "bf16": torch.cuda.is_bf16_supported(),
            }
            for index in range(torch.cuda.device_count())
        ]
    return info


def memory_gib() -> float | None:
    """Physical memory of this machine in GiB, where the OS reports it."""
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def describe_environment() -> dict[str, Any]:
    """Everything ``tunescope env`` prints."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "memory_gib": memory_gib(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "device": device_info(),
        "cache_dir": str(cache_dir()),
        "assets": {name: asset.status() for name, asset in ASSETS.items()},
        "offline": {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ},
    }


def format_environment(report: dict[str, Any], prefix: str = "") -> list[str]:
    """Flatten the report into ``key: value`` lines, nested keys joined with dots."""
    lines = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.extend(format_environment(value, f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key}: {value}")
    return lines
