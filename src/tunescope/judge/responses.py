"""Read the answers to be judged: `tunescope generate` output, or just-eval's formats.

Every shape :class:`~tunescope.generate.store.ResponseRecord` reads is accepted (extra fields
are ignored): `tunescope generate`'s records; just-eval's input (``instruction``, optional
``input`` and ``system``, ``output``, ``generator``); just-eval's judged records (``input``,
``output_cand``, ``generator_cand``), so published outputs can be judged again; ``prompt`` and
``completion``. A record to judge needs a prompt with a user turn and an answer text. Task tags for
the per-tag breakdown come from the first of ``tags``, ``task_tags``, ``category`` that a record has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunescope.errors import UserError
from tunescope.files import sha256_file
from tunescope.generate.store import ResponseRecord
from tunescope.generate.store import read_responses as read_response_records


def answer_words(response: ResponseRecord) -> int:
    """Length of the answer in whitespace-separated words (just-eval's length measure)."""
    return len((response.output or "").split())


def answer_tokens(response: ResponseRecord) -> int | None:
    """Length of the answer in tokens, when the record carries its token ids."""
    return len(response.output_token_ids) if response.output_token_ids is not None else None


def check_judgeable(response: ResponseRecord) -> None:
    """Fail unless ``response`` has a prompt with a user turn and an answer text.

    Raises:
        UserError: naming the record's file and line and what it lacks.
    """
    if response.messages is None:
        raise UserError(
            f"{response.locator}: no prompt: expected one of the fields messages, conversations, instruction, "
            "input, prompt"
        )
    if not response.messages:
        raise UserError(f"{response.locator}: the prompt has no user turn")
    if response.output is None:
        raise UserError(f"{response.locator}: record is missing field 'output' (the answer to judge)")


@dataclass(frozen=True)
class ResponseSet:
    """All answers of one file: one model's answers to an evaluation set."""

    label: str
    """Name of the model in reports."""
    path: str
    """The file the answers came from."""
    fingerprint: str
    """SHA-256 of the file."""
    responses: list[ResponseRecord]
    """The answers, in file order."""

    def by_id(self) -> dict[str, ResponseRecord]:
        """The answers keyed by id."""
        return {response.id: response for response in self.responses}


def read_response_set(path: str | Path, label: str | None = None) -> ResponseSet:
    """Read one file of answers (.jsonl, or a .json list as just-eval writes).

    Args:
        path: The file.
        label: The model's name in reports; by default the records' common ``model`` (just-eval's
            ``generator``), else the file name without its suffix.

    Raises:
        UserError: for a missing or malformed file, a record without prompt or answer, or two
            records with the same id.
    """
    responses = read_response_records(path)
    for response in responses:
        check_judgeable(response)
    path = Path(path).expanduser()
    if label is None:
        generators = {response.model for response in responses}
        label = generators.pop() if len(generators) == 1 and None not in generators else path.stem
    return ResponseSet(str(label), str(path), sha256_file(path), responses)


def read_response_sets(paths: list[str], labels: list[str] | None = None) -> list[ResponseSet]:
    """Read several files, one per model, with distinct labels.

    Raises:
        UserError: when the number of labels does not match, or two files end up with one label.
    """
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"--labels: {len(labels)} labels for {len(paths)} responses files")
    sets = [read_response_set(path, labels[index] if labels else None) for index, path in enumerate(paths)]
    names = [response_set.label for response_set in sets]
    if len(set(names)) != len(names):
        if labels is None:
            # runs/lora/responses.jsonl and runs/full/responses.jsonl: the directory tells them apart.
            sets = [
                ResponseSet(f"{Path(s.path).parent.name}/{Path(s.path).stem}", s.path, s.fingerprint, s.responses)
                for s in sets
            ]
            names = [response_set.label for response_set in sets]
        if len(set(names)) != len(names):
            raise UserError(f"--responses: two files would both be called {names!r}; name them with --labels")
    return sets
