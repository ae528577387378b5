"""Generation: answer prompts with a base, tuned or adapter model, recording exact token ids.

From Python::

    from tunescope.generate import GenerateConfig, generate

    generate(GenerateConfig(model="runs/my-lora", data="mtbench", out="runs/my-lora/responses.jsonl"))
"""

from tunescope.generate.config import GenerateConfig, PromptSettings
from tunescope.generate.pipeline import Generated, GenerateResult, generate, generate_batch, stop_token_ids

__all__ = [
    "GenerateConfig",
    "GenerateResult",
    "Generated",
    "PromptSettings",
    "generate",
    "generate_batch",
    "stop_token_ids",
]
