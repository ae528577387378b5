"""An on-disk index of a training set: which examples contain a phrase, a word, or similar n-grams.

Searching a span must not rescan the training set (the paper string-searched 52k–326k examples
by hand). The index is built once per dataset, in seconds per 100k examples, and cached next to
the dataset's hash (:func:`open_index`). It is a set of numpy ``.npy`` files (opened
memory-mapped, never unpickled) and JSON:

* ``text.npy``: the UTF-8 bytes of every turn of every example, in order, each turn preceded by
  the separator byte 0; ``segment_*.npy`` say where each turn starts, whether it is an
  instruction (user or system turn) or a response (assistant turn), and which example it is in.
* ``words.npy``: the same text as normalised word ids, each turn preceded by the separator id 0,
  with ``word_bytes.npy`` (where each word starts in ``text``), ``roles.npy`` and
  ``example_offsets.npy``.
* ``postings.npy`` and ``bigram_postings.npy``: *positional* inverted indexes, the positions of
  each word id and of each pair of adjacent word ids, ascending. A phrase's occurrences are the
  positions of its rarest word pair, kept where every other pair sits at the right distance: one
  binary search per pair, so a look-up costs about the length of the rarest pair's posting list,
  not the size of the dataset. An exact (verbatim) occurrence is then one byte comparison per
  normalised occurrence, vectorised, at the byte offset ``word_bytes`` gives.
* ``doc_postings.npy``: the examples containing each word, to shortlist candidate sources by
  shared n-grams.

Why not a library: a suffix array (``pydivsufsort``) answers substring queries but costs several
bytes per character and minutes of construction for a 326k-example set, matches inside words, and
knows nothing of case-insensitive or punctuation-blind matching; search engines are servers or
heavy dependencies. Phrase queries over word positions need only numpy's sort and binary search.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tunescope.assets import cache_dir
from tunescope.borrow.lexicon import FUNCTION_WORDS, WORD
from tunescope.borrow.text import SEGMENT_SEPARATOR, ngram_overlap, normalized_words, occurs_exactly
from tunescope.data import DataSettings, Example, load_examples
from tunescope.data.dataset import resolve_data_source
from tunescope.errors import UserError
from tunescope.files import atomic_path, sha256_file, write_json

INDEX_VERSION = 1
"""Bumped whenever the files or their meaning change; part of the cache key."""
SearchIn = Literal["both", "instructions", "responses"]
SEPARATOR, INSTRUCTION, RESPONSE = 0, 1, 2
"""Values of ``roles.npy`` and ``segment_roles.npy``; the separator is also word id 0."""
ROLES_SEARCHED: dict[str, tuple[int, ...]] = {
    "both": (INSTRUCTION, RESPONSE),
    "instructions": (INSTRUCTION,),
    "responses": (RESPONSE,),
}
MANIFEST = "manifest.json"
_CHUNK = 4096
"""Examples whose words are extracted in one pass."""
_SEPARATOR_OR_WORD = re.compile(rf"{WORD.pattern}|{SEGMENT_SEPARATOR}")
_VERIFY_BATCH = 65_536
"""Occurrences whose bytes are compared at once (bounds the memory of the gathered windows)."""
_ARRAYS = (
    "text", "segment_starts", "segment_roles", "example_segments", "words", "word_bytes", "roles",
    "example_offsets", "postings", "posting_offsets", "bigram_keys", "bigram_offsets", "bigram_postings",
    "doc_postings", "doc_offsets", "in_instructions", "in_responses",
)  # fmt: skip


@dataclass(frozen=True)
class PhraseMatch:
    """Where a phrase occurs in the training set."""

    words: list[str]
    """The phrase's normalised words (empty: the phrase has no word and matches nothing)."""
    normalized: list[int]
    """Rows (0-based positions in the index) of the examples containing it normalised, ascending."""
    exact: list[int]
    """Rows of the examples containing it exactly (a subset of ``normalized``), ascending."""


def example_sides(example: Example) -> tuple[list[str], list[str]]:
    """An example's instruction turns (user and system) and response turns (assistant), in order."""
    instructions = [m["content"] for m in example.messages if m["role"] != "assistant"]
    responses = [m["content"] for m in example.messages if m["role"] == "assistant"]
    return instructions, responses


@functools.lru_cache(maxsize=1)
def _word_characters() -> np.ndarray:
    r"""For every code point, whether ``\w`` matches it (letters and digits per ``str.isalnum``, and ``_``)."""
    table = np.fromiter((chr(c).isalnum() for c in range(0x110000)), dtype=bool, count=0x110000)
    table[ord("_")] = True
    return table


def _byte_offsets(points: np.ndarray, char_offsets: np.ndarray) -> np.ndarray:
    """UTF-8 byte offsets of the given character offsets of a text (given as code points)."""
    width = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    return np.concatenate([[0], np.cumsum(width)])[char_offsets]


def _chunk_words(chunk: str) -> tuple[list[str], np.ndarray]:
    """The case-folded words and separators of ``chunk``, and the UTF-8 byte offset of each.

    Fast path: word starts come from a code-point table (a word starts where a word character
    follows a non-word one) and the words from one regular-expression pass over the case-folded
    text, valid when folding keeps every character one character and both agree on the count.
    Otherwise each word is found in the text as written and folded on its own.
    """
    points = np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)
    is_word = _word_characters()[points]
    starts = np.flatnonzero((is_word & ~np.concatenate([[False], is_word[:-1]])) | (points == 0))
    folded = chunk.casefold()
    tokens = _SEPARATOR_OR_WORD.findall(folded) if len(folded) == len(chunk) else []
    if len(tokens) != len(starts):
        matches = list(_SEPARATOR_OR_WORD.finditer(chunk))
        tokens = [match.group().casefold() for match in matches]
        starts = np.fromiter((match.start() for match in matches), dtype=np.int64, count=len(matches))
    return tokens, starts if chunk.isascii() else _byte_offsets(points, starts)


def _distinct(ascending: np.ndarray) -> np.ndarray:
    """The distinct values of an ascending array (linear; ``np.unique`` would sort or hash again)."""
    if not len(ascending):
        return ascending
    return ascending[np.concatenate([[True], ascending[1:] != ascending[:-1]])]


class TrainingIndex:
    """A built index, opened from its directory (arrays memory-mapped)."""

    def __init__(self, directory: str | Path) -> None:
        """Open the index in ``directory``.

        Raises:
            UserError: when the directory holds no complete index of this version.
        """
        self.directory = Path(directory)
        try:
            self.manifest: dict[str, Any] = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{self.directory}: not a tunescope borrowing index (no readable {MANIFEST})") from None
        if self.manifest.get("version") != INDEX_VERSION:
            raise UserError(f"{self.directory}: index version {self.manifest.get('version')}, expected {INDEX_VERSION}")
        self.ids: list[str] = json.loads((self.directory / "ids.json").read_text(encoding="utf-8"))
        self.vocabulary: list[str] = json.loads((self.directory / "vocab.json").read_text(encoding="utf-8"))
        self._word_id = {word: number for number, word in enumerate(self.vocabulary)}
        self._row_of_id: dict[str, int] | None = None
        # Memory-mapped, then viewed as plain arrays: slicing a np.memmap wraps every result in a
        # new memmap object, which costs more than a whole typical look-up.
        arrays = {
            name: np.load(self.directory / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(np.ndarray)
            for name in _ARRAYS
        }
        self.text: np.ndarray = arrays["text"]
        self.words: np.ndarray = arrays["words"]
        self.word_bytes: np.ndarray = arrays["word_bytes"]
        self.roles: np.ndarray = arrays["roles"]
        self.postings: np.ndarray = arrays["postings"]
        self.bigram_postings: np.ndarray = arrays["bigram_postings"]
        self.doc_postings: np.ndarray = arrays["doc_postings"]
        # The small arrays are read into memory: they are touched by every look-up.
        small = [name for name in _ARRAYS if name not in ("text", "words", "word_bytes", "roles")]
        for name in small:
            if not name.endswith("postings"):
                setattr(self, name, np.asarray(arrays[name]))

    # declared for type checkers; set in __init__
    segment_starts: np.ndarray
    segment_roles: np.ndarray
    example_segments: np.ndarray
    example_offsets: np.ndarray
    posting_offsets: np.ndarray
    bigram_keys: np.ndarray
    bigram_offsets: np.ndarray
    doc_offsets: np.ndarray
    in_instructions: np.ndarray
    in_responses: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vocabulary_size(self) -> int:
        """Distinct normalised words, the separator included."""
        return len(self.vocabulary)

    # -- words ------------------------------------------------------------------------------

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        """Id of each normalised word, -1 for a word the training set does not contain."""
        return np.fromiter((self._word_id.get(word, -1) for word in words), dtype=np.int64, count=len(words))

    def known(self, words: Sequence[str], search_in: SearchIn = "both") -> np.ndarray:
        """Whether each normalised word occurs in the training set's instructions and/or responses."""
        ids = self.word_ids(words)
        present = np.zeros(len(ids), dtype=bool)
        found = ids > 0
        if search_in in ("both", "instructions"):
            present[found] |= self.in_instructions[ids[found]]
        if search_in in ("both", "responses"):
            present[found] |= self.in_responses[ids[found]]
        return present

    # -- phrases ----------------------------------------------------------------------------

    def _unigram_positions(self, word_id: int) -> np.ndarray:
        return self.postings[self.posting_offsets[word_id] : self.posting_offsets[word_id + 1]]

    def _bigram_positions(self, key: int) -> np.ndarray:
        slot = int(np.searchsorted(self.bigram_keys, key))
        if slot == len(self.bigram_keys) or self.bigram_keys[slot] != key:
            return self.bigram_postings[:0]
        return self.bigram_postings[self.bigram_offsets[slot] : self.bigram_offsets[slot + 1]]

    def phrase_starts(self, ids: np.ndarray) -> np.ndarray:
        """Start positions (in ``words``) of every contiguous occurrence of the word ids ``ids``."""
        if not len(ids) or (ids <= 0).any():
            return np.zeros(0, dtype=np.int64)
        if len(ids) == 1:
            return self._unigram_positions(int(ids[0])).astype(np.int64)
        keys = ids[:-1] * self.vocabulary_size + ids[1:]
        lists = [self._bigram_positions(int(key)) for key in keys]
        order = sorted(range(len(lists)), key=lambda offset: len(lists[offset]))
        starts = lists[order[0]].astype(np.int64) - order[0]
        for offset in order[1:]:
            if not len(starts):
                break
            positions = lists[offset]
            target = starts + offset
            at = np.searchsorted(positions, target)
            inside = at < len(positions)
            hit = np.zeros(len(starts), dtype=bool)
            hit[inside] = positions[at[inside]] == target[inside]
            starts = starts[hit]
        return starts

    def rows_of_positions(self, positions: np.ndarray) -> np.ndarray:
        """The example row each word position belongs to."""
        return np.searchsorted(self.example_offsets, positions, side="right") - 1

    def _verbatim(self, phrase: str, starts: np.ndarray) -> np.ndarray:
        """Which normalised occurrences (by start position) are exact occurrences of ``phrase``.

        The stripped phrase must be byte for byte the text from its first word's start (less any
        leading punctuation of the phrase) on. The word boundaries are already guaranteed by the
        normalised match: its first and last words are whole words of the text.
        """
        stripped = phrase.strip()
        first_word = WORD.search(stripped)
        if first_word is None or not len(starts):
            return np.zeros(len(starts), dtype=bool)
        wanted = stripped.encode("utf-8")
        lead = len(stripped[: first_word.start()].encode("utf-8"))
        if len(wanted) > len(self.text):
            return np.zeros(len(starts), dtype=bool)
        # Every window of len(wanted) bytes of the text as one opaque value (a strided view, no copy):
        # an occurrence is then checked with one gather and one memcmp, instead of a gather per byte.
        windows = np.ndarray(
            shape=(len(self.text) - len(wanted) + 1,),
            dtype=np.dtype((np.void, len(wanted))),
            buffer=self.text,
            strides=(1,),
        )
        target = np.void(wanted)
        ok = np.zeros(len(starts), dtype=bool)
        for first in range(0, len(starts), _VERIFY_BATCH):
            begin = self.word_bytes[starts[first : first + _VERIFY_BATCH]].astype(np.int64) - lead
            inside = (begin >= 0) & (begin < len(windows))
            ok[first : first + _VERIFY_BATCH][inside] = windows[begin[inside]] == target
        return ok

    def lookup(self, phrase: str, search_in: SearchIn = "both") -> PhraseMatch:
        """The examples that contain ``phrase`` normalised and exactly (see :mod:`tunescope.borrow.text`)."""
        words = normalized_words(phrase)
        starts = self.phrase_starts(self.word_ids(words))
        if search_in != "both" and len(starts):
            starts = starts[self.roles[starts] == ROLES_SEARCHED[search_in][0]]
        rows = self.rows_of_positions(starts)
        exact = rows[self._verbatim(phrase, starts)]
        return PhraseMatch(words, _distinct(rows).tolist(), _distinct(exact).tolist())

    # -- examples ---------------------------------------------------------------------------

    def row_of_id(self, example_id: str) -> int | None:
        """The row of the example named ``example_id``, if any."""
        if self._row_of_id is None:
            self._row_of_id = {example_id: row for row, example_id in enumerate(self.ids)}
        return self._row_of_id.get(example_id)

    def turns(self, row: int, role: int | None = None) -> list[str]:
        """The text of an example's turns, in order; only those of ``role`` when given."""
        out = []
        for segment in range(int(self.example_segments[row]), int(self.example_segments[row + 1])):
            if role is not None and self.segment_roles[segment] != role:
                continue
            begin = int(self.word_bytes[self.segment_starts[segment]]) + 1
            end = int(self.word_bytes[self.segment_starts[segment + 1]])
            out.append(bytes(self.text[begin:end]).decode("utf-8"))
        return out

    def side_texts(self, row: int, search_in: SearchIn = "both") -> list[str]:
        """The turns of an example that ``search_in`` covers."""
        if search_in == "both":
            return self.turns(row)
        return self.turns(row, ROLES_SEARCHED[search_in][0])

    def plain_text(self, row: int) -> str:
        """Instruction turns then response turns, one per line: what the embedder reads."""
        return "\n".join(self.turns(row, INSTRUCTION) + self.turns(row, RESPONSE))

    def segment_words(self, row: int, search_in: SearchIn = "both") -> list[list[str]]:
        """Normalised words of each turn of an example that ``search_in`` covers."""
        start, end = int(self.example_offsets[row]), int(self.example_offsets[row + 1])
        ids, roles = np.asarray(self.words[start:end]), np.asarray(self.roles[start:end])
        cuts = np.flatnonzero(ids == SEPARATOR)
        keep = ROLES_SEARCHED[search_in]
        segments: list[list[str]] = []
        for piece, piece_roles in zip(np.split(ids, cuts), np.split(roles, cuts), strict=True):
            if len(piece) > 1 and piece_roles[1] in keep:
                segments.append([self.vocabulary[i] for i in piece[1:]])
        return segments

    # -- similar examples ---------------------------------------------------------------------

    def ngram_candidates(
        self, query_words: Sequence[str], k: int = 5, search_in: SearchIn = "both", pool: int = 200
    ) -> list[tuple[int, dict[str, float | None]]]:
        """The ``k`` examples whose 1/2/3-gram keyword overlap with ``query_words`` is highest.

        Examples are first shortlisted (``pool`` of them) by the idf-weighted number of the query's
        content words they contain, from the document postings; the shortlist is then ranked by
        :func:`~tunescope.borrow.text.ngram_overlap`, ties by shortlist score, then row.

        Returns:
            ``(row, overlap)`` pairs, best first; overlap as ``ngram_overlap`` returns it.
        """
        content = sorted({word for word in query_words if word not in FUNCTION_WORDS})
        ids = self.word_ids(content)
        ids = ids[ids > 0]
        if not len(ids) or not len(self):
            return []
        scores = np.zeros(len(self), dtype=np.float64)
        for word_id in ids.tolist():
            rows = self.doc_postings[self.doc_offsets[word_id] : self.doc_offsets[word_id + 1]]
            scores[rows] += math.log((1 + len(self)) / (1 + len(rows))) + 1e-3
        shortlist = np.flatnonzero(scores > 0)
        if len(shortlist) > pool:
            shortlist = shortlist[np.argpartition(-scores[shortlist], pool - 1)[:pool]]
        ranked = []
        for row in shortlist.tolist():
            overlap = ngram_overlap(query_words, self.segment_words(row, search_in))
            ranked.append((-(overlap["mean"] or 0.0), -scores[row], row, overlap))
        ranked.sort(key=lambda item: item[:3])
        return [(row, overlap) for _, _, row, overlap in ranked[:k]]


# ------------------------------------------------------------------------------------------
# Building


def _save(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def _smallest_int(limit: int) -> type:
    return np.int32 if limit < 2**31 else np.int64


def _postings(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions grouped by key: (unique keys ascending, offsets into the postings, postings).

    Positions ascend within each key because the sort is stable.
    """
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
    unique = sorted_keys[np.concatenate([[0], boundaries])] if len(keys) else sorted_keys
    offsets = np.concatenate([[0], boundaries, [len(keys)]]).astype(np.int64)
    return unique, offsets, order.astype(_smallest_int(len(keys)))


def _word_ids(tokens: list[str], setdefault: Callable[[str, int], int], vocabulary: dict[str, int]) -> np.ndarray:
    """Global ids of a chunk's words, new words added to ``vocabulary`` in order of first appearance.

    pyarrow's hash-based dictionary encoding (in C) finds the chunk's distinct words, so Python
    touches each distinct word once per chunk instead of every one of the chunk's words.
    """
    import pyarrow as pa

    encoded = pa.array(tokens, type=pa.string()).dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    global_ids = np.fromiter((setdefault(word, len(vocabulary)) for word in distinct), dtype=np.int32,
                             count=len(distinct))  # fmt: skip
    return global_ids[encoded.indices.to_numpy(zero_copy_only=False)]


def build_index(
    examples: Sequence[Example],
    directory: str | Path,
    *,
    description: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainingIndex:
    """Build the index of ``examples`` into ``directory`` (replaced atomically) and open it.

    Args:
        examples: The training examples, in the order their rows will have.
        directory: Where the index goes; built under a temporary name, then renamed.
        description: What the examples are (source, fingerprint, ...), kept in the manifest.
        progress: Called with the number of examples read, chunk by chunk.
    """
    started = time.perf_counter()
    vocabulary: dict[str, int] = {SEGMENT_SEPARATOR: SEPARATOR}
    setdefault = vocabulary.setdefault
    word_chunks: list[np.ndarray] = []
    byte_chunks: list[np.ndarray] = []
    text_chunks: list[bytes] = []
    segment_roles: list[int] = []
    turns_per_example = np.zeros(len(examples), dtype=np.int64)
    text_bytes = 0
    for first in range(0, len(examples), _CHUNK):
        turns: list[str] = []
        for row in range(first, min(first + _CHUNK, len(examples))):
            for role, side in zip((INSTRUCTION, RESPONSE), example_sides(examples[row]), strict=True):
                turns.extend(turn.replace(SEGMENT_SEPARATOR, " ") for turn in side)
                segment_roles.extend([role] * len(side))
                turns_per_example[row] += len(side)
        # One regular-expression pass over a chunk of turns, each preceded by the separator, is
        # much cheaper than one call per turn; chunks keep the word strings' memory bounded.
        chunk = SEGMENT_SEPARATOR + SEGMENT_SEPARATOR.join(turns)
        tokens, positions = _chunk_words(chunk)
        word_chunks.append(_word_ids(tokens, setdefault, vocabulary))
        byte_chunks.append(positions.astype(np.int64) + text_bytes)
        encoded = chunk.encode("utf-8")
        text_chunks.append(encoded)
        text_bytes += len(encoded)
        if progress:
            progress(min(_CHUNK, len(examples) - first))
    text = np.frombuffer(b"".join([*text_chunks, SEGMENT_SEPARATOR.encode()]), dtype=np.uint8)
    del text_chunks
    # The final separator closes the last turn.
    words = np.concatenate([*word_chunks, np.zeros(1, dtype=np.int32)])
    word_bytes = np.concatenate([*byte_chunks, [text_bytes]]).astype(_smallest_int(len(text)))
    del word_chunks, byte_chunks
    segment_starts = np.flatnonzero(words == SEPARATOR)
    roles = np.zeros(len(words), dtype=np.uint8)
    roles[: segment_starts[-1]] = np.repeat(np.asarray(segment_roles, dtype=np.uint8), np.diff(segment_starts))
    roles[segment_starts] = SEPARATOR
    example_segments = np.concatenate([[0], np.cumsum(turns_per_example)]).astype(np.int64)
    example_offsets = segment_starts[example_segments].astype(np.int64)
    n_ids = len(vocabulary)

    # Positional postings of words (word ids are dense, so offsets are indexed by id) and of
    # adjacent pairs (sparse: the distinct pair keys are kept for a binary search).
    postings = np.argsort(words, kind="stable").astype(_smallest_int(len(words)))
    posting_offsets = np.zeros(n_ids + 1, dtype=np.int64)
    np.cumsum(np.bincount(words, minlength=n_ids), out=posting_offsets[1:])
    bigram_keys, bigram_offsets, bigram_postings = _postings(words[:-1].astype(np.int64) * n_ids + words[1:])

    # Document postings: the positional postings with each (word, example) pair kept once. Rows
    # ascend within a word's block, so dropping repeats of the previous entry is enough (linear;
    # np.unique over the pairs would sort them all again).
    word_sorted = words[postings]
    row_sorted = (np.searchsorted(example_offsets, postings, side="right") - 1).astype(np.int32)
    keep = word_sorted != SEPARATOR
    keep[1:] &= (row_sorted[1:] != row_sorted[:-1]) | (word_sorted[1:] != word_sorted[:-1])
    doc_postings = row_sorted[keep]
    doc_offsets = np.zeros(n_ids + 1, dtype=np.int64)
    np.cumsum(np.bincount(word_sorted[keep], minlength=n_ids), out=doc_offsets[1:])
    del word_sorted, row_sorted, keep

    arrays = {
        "text": text,
        "segment_starts": segment_starts.astype(np.int64),
        "segment_roles": np.asarray(segment_roles, dtype=np.uint8),
        "example_segments": example_segments,
        "words": words,
        "word_bytes": word_bytes,
        "roles": roles,
        "example_offsets": example_offsets,
        "postings": postings,
        "posting_offsets": posting_offsets,
        "bigram_keys": bigram_keys,
        "bigram_offsets": bigram_offsets,
        "bigram_postings": bigram_postings,
        "doc_postings": doc_postings,
        "doc_offsets": doc_offsets,
        "in_instructions": np.bincount(words[roles == INSTRUCTION], minlength=n_ids) > 0,
        "in_responses": np.bincount(words[roles == RESPONSE], minlength=n_ids) > 0,
    }
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for name, array in arrays.items():
            _save(tmp, name, array)
        write_json(tmp / "ids.json", [example.id for example in examples])
        (tmp / "vocab.json").write_text(json.dumps(list(vocabulary), ensure_ascii=False), encoding="utf-8")
        write_json(
            tmp / MANIFEST,
            {
                "version": INDEX_VERSION,
                "n_examples": len(examples),
                "n_turns": len(segment_roles),
                "n_words": int(len(words) - len(segment_starts)),
                "vocabulary_size": n_ids - 1,
                "text_bytes": int(len(text)),
                "build_seconds": round(time.perf_counter() - started, 3),
                "word": WORD.pattern,
                "normalisation": "words (\\w+) found in the text as written, then case-folded; "
                "case, white space and punctuation are ignored",
                **(description or {}),
            },
        )
    return TrainingIndex(directory)


def brute_force_lookup(examples: Sequence[Example], phrase: str, search_in: SearchIn = "both") -> PhraseMatch:
    """The reference the index must agree with: scan every example for ``phrase``.

    Same definitions as :meth:`TrainingIndex.lookup`, computed directly from the text of each
    turn, with no index. Used by the tests and as the benchmark's in-run baseline.
    """
    words = normalized_words(phrase)
    normalized, exact = [], []
    if not words:
        return PhraseMatch(words, [], [])
    size = len(words)
    for row, example in enumerate(examples):
        instructions, responses = example_sides(example)
        turns = {"both": instructions + responses, "instructions": instructions, "responses": responses}[search_in]
        turns = [turn.replace(SEGMENT_SEPARATOR, " ") for turn in turns]
        found = False
        for turn in turns:
            turn_words = normalized_words(turn)
            if any(turn_words[i : i + size] == words for i in range(len(turn_words) - size + 1)):
                found = True
                break
        if found:
            normalized.append(row)
            if any(occurs_exactly(phrase, turn) for turn in turns):
                exact.append(row)
    return PhraseMatch(words, normalized, exact)


# ------------------------------------------------------------------------------------------
# The cache


def default_index_root() -> Path:
    """``<tunescope cache>/borrow``: where indexes live unless told otherwise."""
    return cache_dir() / "borrow"


def _quick_fingerprint(settings: DataSettings) -> str | None:
    """The data hash without parsing the data, for a local file (what ``load_examples`` records)."""
    path = Path(resolve_data_source(settings.data)).expanduser()
    return sha256_file(path) if path.is_file() else None


def index_key(fingerprint: str, settings: DataSettings) -> str:
    """Name of the index directory of one dataset selection: its hash and how it was selected."""
    selection = {
        "version": INDEX_VERSION,
        "fingerprint": fingerprint,
        "format": settings.format,
        "split": settings.split,
        "subset_size": settings.subset_size,
        "subset_seed": settings.subset_seed,
    }
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    return f"{fingerprint[:16]}-{digest[:12]}"


def open_index(
    settings: DataSettings,
    root: str | Path | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[TrainingIndex, bool]:
    """The index of the training data ``settings`` names, built on first use and cached.

    The cache key is the data's SHA-256 (or dataset fingerprint) plus the selection settings, so
    a changed file gets a new index. A local file is hashed without being parsed, so the cached
    index of a large file opens in about the time it takes to hash it.

    Returns:
        The index, and whether it was built by this call.

    Raises:
        UserError: for training data that cannot be loaded (see ``load_examples``).
    """
    root = Path(root).expanduser() if root else default_index_root()
    fingerprint = _quick_fingerprint(settings)
    if fingerprint is not None and (root / index_key(fingerprint, settings) / MANIFEST).is_file():
        return TrainingIndex(root / index_key(fingerprint, settings)), False
    loaded = load_examples(settings)
    directory = root / index_key(loaded.fingerprint, settings)
    if (directory / MANIFEST).is_file():
        return TrainingIndex(directory), False
    description = {
        "source": loaded.source,
        "fingerprint": loaded.fingerprint,
        "format": loaded.format,
        "n_records": loaded.n_records,
        "n_without_response": loaded.n_without_response,
        "selection": {
            "split": settings.split,
            "subset_size": settings.subset_size,
            "subset_seed": settings.subset_seed,
        },
    }
    return build_index(loaded.examples, directory, description=description, progress=progress), True
