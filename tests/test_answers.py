"""The repetition rule of the report's answers section."""

import pytest

from tunescope.report.answers import REPETITION_MIN_NGRAMS, is_repetitive, repeated_ngram_share


def test_a_numbered_list_of_one_name_is_repetitive():
    listing = "\n".join(f"{number}. Dr. Elena Marsh" for number in range(1, 17))
    share, count = repeated_ngram_share(listing)
    assert count == 4 * 16 - 2 and share > 0.9
    assert is_repetitive(listing)


def test_a_repeated_json_field_is_repetitive():
    rows = ",\n".join(f'{{"name": "Person {i}", "type": "CEO"}}' for i in range(12))
    assert is_repetitive(f"[{rows}]")


def test_ordinary_prose_is_not_repetitive():
    text = (
        "Photosynthesis turns light into chemical energy. Plants take in carbon dioxide through their leaves, "
        "draw water up from the roots, and use the energy of sunlight to make glucose, releasing oxygen."
    )
    share, count = repeated_ngram_share(text)
    assert share == 0.0 and count > REPETITION_MIN_NGRAMS
    assert not is_repetitive(text)


def test_short_answers_are_never_flagged():
    assert not is_repetitive("yes yes yes yes yes")  # 3 trigrams, all the same
    assert repeated_ngram_share("") == (0.0, 0)


@pytest.mark.parametrize(("text", "expected"), [("a b c a b c", 1 / 4), ("a b c d", 0.0)])
def test_share_counts_repeats_of_earlier_ngrams(text, expected):
    assert repeated_ngram_share(text)[0] == pytest.approx(expected)
