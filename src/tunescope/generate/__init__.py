"""Generation: answer prompts with a base, tuned or adapter model, recording exact token ids.

From Python::

    from tunescope.generate import GenerateConfig, generate

    generate(GenerateConfig(model="runs/my-lora", data="mtbench", out="runs/my-lora/responses.jsonl"))
"""

from tunescope.generate.config import GenerateConfig, PromptSettings
from tunescope.generate.pipeline import GenerateResult, generate

__all__ = [
    "GenerateConfig",
    "GenerateResult",
    "PromptSettings",
    "generate",
]
