"""From a data source to a list of conversations: read, normalise, filter, subset."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from tunescope.assets import dataset_path
from tunescope.config import Config
from tunescope.data.formats import DataFormat, Message, detect_format, to_messages
from tunescope.data.readers import FILE_SUFFIXES, read_dataset
from tunescope.data.templates import TrainOn
from tunescope.errors import UserError


class DataSettings(Config):
    """Data settings."""

    data: str = "chitchat"
    """Instruction data: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face
    dataset id, or a tunescope asset name (see `tunescope assets`)."""
    format: DataFormat = "auto"
    """Record shape: alpaca, sharegpt, messages or prompt_completion; auto detects it from the fields."""
    split: str = "train"
    """Split to read from a Hugging Face dataset."""
    template: str | None = None
    """Chat template: unset uses the tokenizer's own, or 'plain' (a User:/Assistant: transcript ending answers
    with EOS) where it has none; 'plain', 'alpaca', 'chatml' or a .jinja file replace it."""
    train_on: TrainOn = "assistant"
    """Tokens that carry the loss: 'assistant' (responses and their end-of-turn token) or 'all'."""
    max_length: int = Field(default=1024, gt=0)
    """Maximum tokens per example; longer examples keep their beginning (LLaMA-Factory's cutoff_len)."""
    subset_size: int | None = Field(default=None, gt=0)
    """Train on the first N examples of one seeded shuffle, so smaller subsets nest inside larger ones."""
    subset_seed: int = 0
    """Seed of the shuffle that defines nested subsets; independent of the training seed."""


@dataclass(frozen=True)
class Example:
    """One conversation, normalised."""

    id: str
    """The record's ``id`` field, or its 0-based row number in the source."""
    messages: list[Message]
    """Role/content turns."""
    locator: str
    """Where the record came from, for messages to the user."""


@dataclass(frozen=True)
class LoadedData:
    """Examples plus what identifies them, for provenance and reporting."""

    source: str
    """The resolved path or dataset id."""
    format: str
    """The record shape that was used (detected or forced)."""
    fingerprint: str
    """Hash of the source data."""
    n_records: int
    """Records in the source."""
    n_without_response: int
    """Records dropped because they have no non-empty assistant turn."""
    examples: list[Example]
    """The selected examples, in subset order."""


def resolve_data_source(data: str) -> str:
    """Return ``data`` itself when it exists, else the path of the tunescope asset so named, else ``data``."""
    if Path(data).expanduser().exists():
        return data
    path = dataset_path(data)
    return str(path) if path else data


def check_local_source(data: str, what: str) -> None:
    """Fail at once when ``data`` names a local file (a data suffix or a path) that is not there.

    Hub ids and asset names pass: they are only known missing when loaded.

    Raises:
        UserError: ``<what> <data>: data file not found``.
    """
    path = Path(resolve_data_source(data)).expanduser()
    if not path.exists() and (path.suffix in FILE_SUFFIXES or data.startswith((".", "/", "~"))):
        raise UserError(f"{what} {data}: data file not found")


def load_examples(settings: DataSettings, *, require_response: bool = True) -> LoadedData:
    """Read, normalise, filter and subset the data named by ``settings``.

    Args:
        settings: Where the data is and how to read it.
        require_response: Every record must have an answer (an assistant turn): training needs
            one, and a record without one is an error naming it; records whose answer is empty are
            dropped. False reads prompts, with or without answers (see :mod:`tunescope.data.formats`).

    Raises:
        UserError: for a missing source, a malformed record, a record without an answer (when one is
            required), an empty dataset, or a subset larger than the data.
    """
    source = resolve_data_source(settings.data)
    raw = read_dataset(source, settings.split)
    if not raw.records:
        raise UserError(f"{raw.source}: the dataset is empty")
    data_format = settings.format
    if data_format == "auto":
        data_format = detect_format(raw.records[0].fields, raw.records[0].locator)
    examples = []
    for record in raw.records:
        messages = to_messages(record.fields, data_format, record.locator, require_response=require_response)
        if require_response and not any(message["role"] == "assistant" for message in messages):
            raise UserError(
                f"{record.locator}: the conversation has no assistant turn, so no answer; this command needs an "
                "answer in every record (prompts alone are for `tunescope generate`)"
            )
        example_id = str(record.fields["id"]) if record.fields.get("id") is not None else str(record.row)
        examples.append(Example(example_id, messages, record.locator))
    n_records = len(examples)
    if require_response:
        examples = [ex for ex in examples if any(m["role"] == "assistant" and m["content"] for m in ex.messages)]
        if not examples:
            raise UserError(
                f"{raw.source}: no examples left after filtering: none of its {n_records} records "
                "has a non-empty assistant response"
            )
    selected = nested_subset(examples, settings.subset_size, settings.subset_seed, raw.source)
    return LoadedData(raw.source, data_format, raw.fingerprint, n_records, n_records - len(examples), selected)


def nested_subset(items: list, size: int | None, seed: int, source: str = "data") -> list:
    """Return the first ``size`` items of one seeded shuffle of ``items``.

    For a fixed seed the subsets are nested: the 1K subset is inside the 10K subset, which is
    inside the 52K one, as the paper's data-scaling experiments need. ``size=None`` keeps
    everything, in source order.
    """
    if size is None:
        return list(items)
    if size > len(items):
        raise UserError(f"--subset-size {size} is larger than {source} ({len(items)} usable examples)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[index] for index in order[:size]]
