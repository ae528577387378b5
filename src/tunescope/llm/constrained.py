"""Decoding constrained to a JSON schema, for local models: every reply is valid JSON of the schema.

A transformers :class:`~transformers.LogitsProcessor` asks llguidance (a maintained structured-generation
library; Rust, CPU and GPU alike) which tokens may come next under the schema's grammar and masks the
others, so a local judge's reply is always one JSON object with every required key, integer scores
inside their range and choices from their enum.

Two choices make the reply also fit the token budget:

* the text the grammar forces (keys, separators, braces) is emitted as llguidance's own tokenization of
  it (:meth:`llguidance.LLMatcher.compute_ff_tokens`), not letter by letter, so it costs what the
  skeleton of the reply costs (:func:`skeleton_tokens`);
* free strings (the judge's reasons) are plain printable ASCII without quotes, backslashes or escapes,
  and at most :func:`string_budget` characters each. A token holds at least one character, so such a
  string never costs more tokens than characters, and skeleton plus strings fits ``max_tokens``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

# Printable ASCII except '"' (0x22) and '\' (0x5c): with escapes switched off, every character of such a
# string is one byte of the reply, so its token count is bounded by its length.
PLAIN_TEXT_PATTERN = r"^[ !#-\[\]-~]*$"
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "json_allowed_escapes": ""}
"""The one layout replies are written in: ``{"key": value, "key": value}``, no free whitespace, no escapes."""
SEPARATORS = (", ", ": ")
"""``json.dumps`` separators that reproduce :data:`JSON_LAYOUT`."""


def free_strings(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The string properties without an enum (free text, such as a judge's reasons), anywhere in ``schema``."""
    if schema.get("type") == "object":
        return [node for value in schema.get("properties", {}).values() for node in free_strings(value)]
    return [schema] if schema.get("type") == "string" and "enum" not in schema else []


def _longest_instance(schema: dict[str, Any]) -> Any:
    """The schema's longest valid value when every free string is empty: the reply's fixed skeleton."""
    kind = schema.get("type")
    if kind == "object":
        return {key: _longest_instance(value) for key, value in schema["properties"].items()}
    if "enum" in schema:
        return max(schema["enum"], key=lambda choice: len(json.dumps(choice)))
    if kind == "integer":
        return max((schema.get("minimum", 0), schema.get("maximum", 0)), key=lambda bound: len(str(bound)))
    if kind == "string":
        return ""
    raise ValueError(f"schema type {kind!r} is not supported by constrained decoding")


def skeleton_tokens(tokenizer: Any, schema: dict[str, Any]) -> int:
    """Tokens of the reply's fixed part: ``schema``'s longest value with empty free strings."""
    text = json.dumps(_longest_instance(schema), separators=SEPARATORS)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokens_needed(tokenizer: Any, schema: dict[str, Any], chars_per_string: int) -> int:
    """Tokens a reply needs at most when each free string holds ``chars_per_string`` characters.

    The skeleton, a token per property for the few places where the grammar's tokens and the skeleton's
    tokenization split a boundary differently, one end-of-sequence token, and a token per character.
    """
    properties = json.dumps(_longest_instance(schema)).count(":")
    fixed = skeleton_tokens(tokenizer, schema) + properties + 1
    return fixed + len(free_strings(schema)) * chars_per_string


def string_budget(tokenizer: Any, schema: dict[str, Any], max_tokens: int) -> int:
    """Characters each free string may hold so that the whole reply fits in ``max_tokens`` tokens.

    The inverse of :func:`tokens_needed`; negative when not even the skeleton fits.
    """
    strings = len(free_strings(schema))
    spare = max_tokens - tokens_needed(tokenizer, schema, 0)
    return spare // strings if strings else spare


def bounded_schema(schema: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """A copy of ``schema`` whose free strings are plain ASCII of at most ``max_chars`` characters."""
    bounded = copy.deepcopy(schema)
    for node in free_strings(bounded):
        node["maxLength"] = max_chars
        node["pattern"] = PLAIN_TEXT_PATTERN
    return bounded


def grammar_tokenizer(tokenizer: Any) -> Any:
    """The tokenizer as llguidance reads it, from a fast Hugging Face one (about a second to build: keep it).

    Raises:
        ValueError: for a slow (Python) tokenizer, which llguidance cannot read.
    """
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)


class SchemaConstraint(LogitsProcessor):
    """Masks every token that would take the reply outside a JSON schema (one sequence at a time).

    Args:
        grammar_tokenizer: From :func:`grammar_tokenizer`.
        schema: The JSON schema the reply must satisfy (see :func:`bounded_schema`).
    """

    def __init__(self, grammar_tokenizer: Any, schema: dict[str, Any]) -> None:
        import llguidance

        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT)
        self.matcher = llguidance.LLMatcher(grammar_tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"the reply schema cannot be compiled: {self.matcher.get_error()}")
        self._prompt_length: int | None = None

    @property
    def failed(self) -> bool:
        """Whether a token outside the grammar was consumed (it never is when this mask is applied last)."""
        return self.matcher.is_error()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Consume the token chosen last, then leave only the tokens the grammar allows next."""
        if input_ids.shape[0] != 1:
            raise ValueError("SchemaConstraint follows one sequence; generate one reply at a time")
        if self._prompt_length is None:
            self._prompt_length = input_ids.shape[1]
        elif not self.matcher.consume_token(int(input_ids[0, -1])):
            return scores  # the parser counts the reply as a failure
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        forced = self.matcher.compute_ff_tokens()
        if forced:
            # The grammar fixes the next bytes: take its tokenization of them, not any split of them.
            allowed[forced[0]] = True
        else:
            bias = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)
            mask = torch.from_numpy(bias[: scores.shape[-1]] > 0)
            allowed[: mask.shape[0]] = mask.to(scores.device)
        return scores.masked_fill(~allowed, float("-inf"))
