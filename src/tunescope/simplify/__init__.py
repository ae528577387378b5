"""`tunescope simplify`: the paper's LIMA-Simple, a training set whose responses are rewritten concisely.

The paper (docs/method.md#simplified-training-data) rewrote every LIMA response with GPT-4 to keep
only what is helpful and factual, leaving code and summaries alone, and found that training on the shorter responses
reduced length-driven hallucination. This package does the same for any instruction dataset,
through either backend of :mod:`tunescope.llm` (an OpenAI-compatible endpoint or a local transformers model)::

    from tunescope.simplify import SimplifyConfig, simplify

    result = simplify(SimplifyConfig(data="train.jsonl", out="train.simple.jsonl",
                                     backend="openai", judge_base_url="http://127.0.0.1:8000/v1", judge_model="m"))

The output keeps every record's shape and fields; only response texts change. A crash loses at
most the requests in flight: finished records are appended to ``<out>.part.jsonl`` and a rerun
skips them.
"""

from tunescope.simplify.config import SimplifyConfig
from tunescope.simplify.pipeline import SimplifyResult, simplify
from tunescope.simplify.rules import keep_reason, rewrite_messages

__all__ = ["SimplifyConfig", "SimplifyResult", "keep_reason", "rewrite_messages", "simplify"]
