"""Instruction data and documents: readers, formats, chat templates and loss masks."""

from tunescope.data.dataset import DataSettings, Example, LoadedData, load_examples, nested_subset
from tunescope.data.templates import (
    IGNORE_INDEX,
    TokenizedExample,
    render_prompt,
    tokenize_documents,
    tokenize_examples,
)

__all__ = [
    "IGNORE_INDEX",
    "DataSettings",
    "Example",
    "LoadedData",
    "TokenizedExample",
    "load_examples",
    "nested_subset",
    "render_prompt",
    "tokenize_documents",
    "tokenize_examples",
]
