"""`tunescope demo`: the whole pipeline on the embedded default model and data, on a laptop CPU.

LoRA and full fine-tuning of SmolLM2-135M-Instruct on chit-chat answers mixed with invented
facts (so the knowledge probe has something to find), then generation, token shift, borrowing,
a stand-in judge (the same small model, labelled as such, unless a judge endpoint is given) and
the probes, and finally the report. About 10 minutes on 2 cores; ``quick`` about 3.
"""

from __future__ import annotations

from typing import Any

from tunescope.experiment.config import ExperimentConfig


def demo_config(quick: bool = False, judge: dict[str, Any] | None = None) -> ExperimentConfig:
    """The demo's grid; ``judge`` overrides the stand-in judge (e.g. backend, base_url, judge_model)."""
    per_source = 16 if quick else 48
    return ExperimentConfig.model_validate(
        {
            "models": ["smollm2"],
            "methods": ["lora", "full"],
            "datasets": [
                {
                    "name": "chitchat+facts",
                    "sources": [
                        {"data": "chitchat", "subset_size": per_source},
                        {"data": "facts", "subset_size": per_source},
                    ],
                }
            ],
            "subset_sizes": [None],
            "train": {
                "epochs": 1 if quick else 2,
                "max_length": 192,
                "batch_size": 8,
                "micro_batch_size": 4,
                # LoRA usually needs several times the full fine-tuning rate; the paper used 5e-5 for both.
                "lora_learning_rate": 2e-4,
                "full_learning_rate": 5e-5,  # the paper's rate for full fine-tuning
                "save_steps": 6,
                "monitor_every": 2 if quick else 3,
                "monitor_examples": 2 if quick else 4,
                "monitor_tokens": 16 if quick else 32,
            },
            "eval": {"prompts": "mtbench", "subset_size": 6 if quick else 12, "max_new_tokens": 48 if quick else 96},
            "judge": {
                "backend": "hf",
                "judge_model": "smollm2",
                "limit": 2 if quick else 4,
                "max_tokens": 192,
                **(judge or {}),
            },
            "probes": {"max_questions": 24 if quick else 48, "passages": 6 if quick else 12},
            "borrow": True,
        }
    )
