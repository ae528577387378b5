"""From a data source to a list of conversations (or documents): read, normalise, filter, subset."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from tunescope.assets import dataset_path
from tunescope.config import Config
from tunescope.data.formats import DataFormat, Message, detect_format, to_document, to_messages
from tunescope.data.readers import FILE_SUFFIXES, RawDataset, RawRecord, read_dataset
from tunescope.data.templates import TrainOn
from tunescope.errors import UserError


class DataSettings(Config):
    """Data settings."""

    data: str = "chitchat"
    """Instruction data: a .json/.jsonl/.parquet/.csv file, a saved dataset directory, a Hugging Face
    dataset id, or a tunescope asset name (see `tunescope assets`); for --format text also a .txt file
    or a directory of them."""
    format: DataFormat = "auto"
    """Record shape: alpaca, sharegpt, messages or prompt_completion; text for raw documents (a 'text'
    field, or .txt files split at blank lines) to continue pre-training on; auto detects it."""
    split: str = "train"
    """Split to read from a Hugging Face dataset."""
    template: str | None = None
    """Chat template: unset uses the tokenizer's own, or 'plain' (a User:/Assistant: transcript ending answers
    with EOS) where it has none; 'plain', 'alpaca', 'chatml' or a .jinja file replace it."""
    train_on: TrainOn = "assistant"
    """Tokens that carry the loss: 'assistant' (responses and their end-of-turn token) or 'all'; text data
    trains on every token."""
    max_length: int = Field(default=1024, gt=0)
    """Maximum tokens per example; longer examples keep their beginning (LLaMA-Factory's cutoff_len). Text
    documents are instead cut into pieces of this length, none dropped, and packed into rows of it."""
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
    """Role/content turns (none for a document of text data)."""
    locator: str
    """Where the record came from, for messages to the user."""
    text: str | None = None
    """The document, for text data (continued pre-training); None for a conversation."""


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
    """Records dropped because they have no non-empty assistant turn (for text data: no text)."""
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
    if data_format == "text":
        return _load_documents(settings, raw, require_response)
    examples = []
    for record in raw.records:
        messages = to_messages(record.fields, data_format, record.locator, require_response=require_response)
        if require_response and not any(message["role"] == "assistant" for message in messages):
            raise UserError(
                f"{record.locator}: the conversation has no assistant turn, so no answer; this command needs an "
                "answer in every record (prompts alone are for `tunescope generate`)"
            )
        examples.append(Example(_example_id(record), messages, record.locator))
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


def _example_id(record: RawRecord) -> str:
    return str(record.fields["id"]) if record.fields.get("id") is not None else str(record.row)


def _load_documents(settings: DataSettings, raw: RawDataset, require_response: bool) -> LoadedData:
    """Text data: one example per non-empty document, subset like conversations.

    Raises:
        UserError: for a record without a string ``text`` field, no document at all, or text data
            where prompts are expected.
    """
    if not require_response:
        raise UserError(f"{raw.source}: text data holds documents to train on, not prompts to answer")
    documents = [
        Example(_example_id(record), [], record.locator, to_document(record.fields, record.locator))
        for record in raw.records
    ]
    kept = [document for document in documents if document.text]
    if not kept:
        raise UserError(f"{raw.source}: no documents: the 'text' of every one of its {len(documents)} records is empty")
    selected = nested_subset(kept, settings.subset_size, settings.subset_seed, raw.source)
    return LoadedData(raw.source, "text", raw.fingerprint, len(documents), len(documents) - len(kept), selected)


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
