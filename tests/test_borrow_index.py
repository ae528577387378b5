"""The borrowing index: look-ups agree with a brute-force scan, rare phrases find their examples, caching."""

import json
import random

import numpy as np
import pytest

from tunescope.borrow import brute_force_lookup, build_index, open_index
from tunescope.borrow.index import TrainingIndex
from tunescope.borrow.text import ngram_overlap, normalized_words, occurs_exactly
from tunescope.data import DataSettings, Example
from tunescope.errors import UserError

from conftest import write_jsonl

WORDS = ("the cat sat on a mat however typically dog Dog DOG blue sky rain it's don't café naïve "
         "über 42 x_y well-known co-op").split()  # fmt: skip
PUNCTUATION = [" ", " ", " ", ", ", ". ", "! ", "\n", " - ", "  ", "'s "]


def example(example_id: str, instruction: str, response: str, system: str | None = None) -> Example:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    return Example(example_id, messages, example_id)


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(PUNCTUATION) for _ in range(n)).strip()


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(7)
    examples = [example(f"e{i}", random_text(rng, rng.randint(0, 12)), random_text(rng, rng.randint(1, 25)),
                        system=random_text(rng, 3) if i % 9 == 0 else None) for i in range(300)]  # fmt: skip
    # Rare planted phrases: exact in e5 (response) and e77 (instruction); normalised only in e150 and e151.
    examples[5] = example("e5", "Tell me a story.", "It was the Zorblax Quintessence, sold in Hooptown.")
    examples[77] = example("e77", "What is the Zorblax Quintessence?", "A mystery.")
    examples[150] = example("e150", "Hm.", "ZORBLAX   quintessence!!")
    examples[151] = example("e151", "zorblax-quintessence, again", "ok")
    examples[200] = example("e200", "Café?", "The naïve Crêperie in Zürich.")
    return examples


@pytest.fixture(scope="module")
def index(corpus, tmp_path_factory) -> TrainingIndex:
    return build_index(corpus, tmp_path_factory.mktemp("index") / "idx")


def test_planted_rare_phrases_find_their_examples(index):
    match = index.lookup("Zorblax Quintessence")
    assert [index.ids[row] for row in match.exact] == ["e5", "e77"]
    assert [index.ids[row] for row in match.normalized] == ["e5", "e77", "e150", "e151"]
    assert index.lookup("Zorblax Quintessence", "responses").normalized == [5, 150]
    assert index.lookup("Zorblax Quintessence", "instructions").exact == [77]
    assert index.lookup("zorblax quintessence").exact == []  # exact is case-sensitive
    assert index.lookup("sold in Hooptown.").exact == [5]  # trailing punctuation is part of an exact match
    assert index.lookup("sold in Hooptown!").exact == [] and index.lookup("sold in Hooptown!").normalized == [5]
    assert index.lookup("Hoop").normalized == []  # whole words only
    assert index.lookup("Crêperie in Zürich").exact == [200] and index.lookup("CRÊPERIE IN ZÜRICH").normalized == [200]
    assert index.lookup("!!!").normalized == [] and index.lookup("").exact == []
    assert index.lookup("never seen words").normalized == []


def test_look_ups_agree_with_a_brute_force_scan(corpus, index):
    rng = random.Random(11)
    phrases = ["Zorblax Quintessence", "the cat", "Dog, DOG", "it's", "don't café", "well-known co-op", "über 42"]
    for _ in range(150):  # slices of real texts: punctuation, case and boundaries as they occur
        text = rng.choice([m["content"] for m in rng.choice(corpus).messages])
        start = rng.randint(0, max(0, len(text) - 1))
        phrases.append(text[start : start + rng.randint(1, 30)])
    phrases += [random_text(rng, rng.randint(1, 3)) for _ in range(60)]
    checked = 0
    for phrase in phrases:
        for search_in in ("both", "instructions", "responses"):
            assert index.lookup(phrase, search_in) == brute_force_lookup(corpus, phrase, search_in), (phrase, search_in)
            checked += bool(brute_force_lookup(corpus, phrase, search_in).exact)
    assert checked > 100  # most phrases occur: the comparison is not between empty answers


def test_word_presence_turns_and_candidates(corpus, index):
    assert index.known(["zorblax", "hooptown", "nowhere", "story"], "both").tolist() == [True, True, False, True]
    assert index.known(["hooptown", "story"], "instructions").tolist() == [False, True]
    assert index.known(["hooptown", "story"], "responses").tolist() == [True, False]
    for row in (0, 5, 9, 299):
        assert index.turns(row) == [m["content"] for m in corpus[row].messages]
        assert index.segment_words(row) == [normalized_words(m["content"]) for m in corpus[row].messages]
    assert index.row_of_id("e77") == 77 and index.row_of_id("nope") is None
    query = normalized_words("The Zorblax Quintessence is sold in Hooptown")
    best_row, overlap = index.ngram_candidates(query, k=3)[0]
    assert best_row == 5 and overlap == ngram_overlap(query, index.segment_words(5))
    assert overlap["3"] == pytest.approx(2 / 5)  # of 5 trigrams only "the zorblax quintessence", "sold in hooptown"


def test_text_definitions():
    assert normalized_words("It's a Well-known CAFÉ!") == ["it", "s", "a", "well", "known", "café"]
    assert occurs_exactly("Cat", "the Cat sat") and not occurs_exactly("Cat", "Catherine")
    assert occurs_exactly("(see above)", "x(see above)y")  # punctuation at the edges needs no word boundary
    overlap = ngram_overlap(["the", "red", "fox", "runs"], [["a", "red", "fox"], ["runs"]])
    assert overlap["1"] == 1.0 and overlap["2"] == pytest.approx(1 / 3) and overlap["3"] == 0.0  # not across segments
    assert ngram_overlap(["of", "the"], [["of", "the"]])["mean"] is None  # function words only: no keyword


def test_the_index_is_cached_by_data_hash_and_selection(tmp_path):
    rows = [{"id": f"x{i}", "instruction": f"Question {i}", "output": f"Answer number {i}"} for i in range(20)]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    root = tmp_path / "cache"
    first, built = open_index(DataSettings(data=str(data)), root)
    assert built and len(first) == 20 and first.ids[3] == "x3"
    again, built = open_index(DataSettings(data=str(data)), root)
    assert not built and again.directory == first.directory
    subset, built = open_index(DataSettings(data=str(data), subset_size=5), root)
    assert built and len(subset) == 5 and subset.directory != first.directory
    rows[0]["output"] = "changed"
    write_jsonl(data, rows)
    changed, built = open_index(DataSettings(data=str(data)), root)
    assert built and changed.directory != first.directory and changed.lookup("changed").exact == [0]
    manifest = json.loads((changed.directory / "manifest.json").read_text())
    assert manifest["n_examples"] == 20 and manifest["fingerprint"]
    # Nothing in the index needs pickle.
    for array in changed.directory.glob("*.npy"):
        np.load(array, allow_pickle=False)
    (changed.directory / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not a tunescope borrowing index"):
        TrainingIndex(changed.directory)
