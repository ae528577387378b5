"""The pure parts of the shift analysis: metric maths, AlignTDS's numbers, sentences, text spans, summary."""

import math

import numpy as np
import pytest
import torch

from tunescope.distributions import classify, entropy, kl_divergence, log_probs, rank_of
from tunescope.shift.aligntds import COLUMN_MEANINGS, AlignTDSSettings, aligntds_position, renormalise
from tunescope.shift.columns import column_definitions, exact_metrics, token_columns
from tunescope.shift.initiation import initiation_mask, sentence_of_tokens, sentence_spans
from tunescope.shift.metrics import Positions
from tunescope.shift.summary import summarize_columns
from tunescope.shift.text import token_spans

# ---------------------------------------------------------------------------------------------
# Full-vocabulary metrics


def test_kl_matches_the_formula_in_both_directions():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    forward = kl_divergence(p.log(), q.log())
    backward = kl_divergence(q.log(), p.log())
    assert forward.item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), abs=1e-6)
    assert backward.item() == pytest.approx(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5), abs=1e-6)
    assert kl_divergence(p.log(), p.log()).item() == 0.0


def test_zero_probability_terms_count_as_zero():
    logits = torch.tensor([[0.0, -math.inf, 1.0]])
    assert torch.isfinite(kl_divergence(log_probs(logits), log_probs(logits))).all()
    assert entropy(log_probs(torch.zeros(1, 8))).item() == pytest.approx(math.log(8), abs=1e-6)


def test_rank_is_one_plus_strictly_larger_logits():
    logits = torch.tensor([[3.0, 1.0, 3.0, 2.0, -1.0]])
    ranks = [rank_of(logits, torch.tensor([token])).item() for token in range(5)]
    assert ranks == [1, 4, 1, 3, 5]  # tokens 0 and 2 tie at the top and share rank 1


def test_rank_read_off_the_top_k_equals_the_full_count():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(-4, 5, (200, 40), generator=generator).float()  # many ties, at the k-th place too
    tokens = torch.randint(0, 40, (200,), generator=generator)
    top = logits.topk(5, dim=-1).values
    assert (tokens_outside := (logits.gather(-1, tokens[:, None]).squeeze(-1) < top[:, -1]).sum()) > 0
    assert tokens_outside < 200  # both paths are exercised
    assert torch.equal(rank_of(logits, tokens, top), rank_of(logits, tokens))


def test_classes_follow_the_thresholds():
    ranks = torch.tensor([1, 2, 3, 4, 100])
    assert classify(ranks).tolist() == [0, 1, 1, 2, 2]
    assert classify(ranks, unshifted_max_rank=2, marginal_max_rank=4).tolist() == [0, 0, 1, 1, 2]


def test_exact_metrics_on_a_hand_checked_position():
    base = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tuned = torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    m = exact_metrics(Positions(base, tuned, torch.tensor([1]), top_k=2))
    p_base = torch.softmax(base, -1)[0]
    assert m["base_rank"].item() == 2 and m["tuned_rank"].item() == 1 and m["tuned_top1"].item() == 1
    assert m["base_prob"].item() == pytest.approx(p_base[1].item())
    assert m["base_top_ids"].tolist() == [[0, 1]] and m["tuned_top_ids"][0, 0].item() == 1
    assert m["base_rank_of_tuned_top1"].item() == 2
    assert m["klass"].item() == 1 and m["is_tuned_top1"].item()  # base rank 2: marginal


# ---------------------------------------------------------------------------------------------
# AlignTDS compatibility, against numbers worked out by hand


def test_aligntds_numbers_on_a_hand_worked_example():
    # Base list (text, logit): a 2, b 1, c 0  → weights e^2, e^1, e^0 over their sum:
    #   w_base = (0.665241, 0.244728, 0.090031)
    # Tuned list: b 3, a 1, d 1              → w_tuned = (0.786986, 0.106507, 0.106507)
    # KL over the texts in both lists (a, b):
    #   0.665241·ln(0.665241/0.106507) + 0.244728·ln(0.244728/0.786986) = 1.218681 − 0.285858 = 0.932823
    # TR: the tuned top-1 "b" is at 0-indexed position 1 of the base list (marginal); TP = 0.244728.
    numbers = aligntds_position(["a", "b", "c"], [2.0, 1.0, 0.0], ["b", "a", "d"], [3.0, 1.0, 1.0], AlignTDSSettings())
    assert numbers.kl == pytest.approx(0.932823, abs=1e-6)
    assert numbers.top_rank == 1
    assert numbers.top_prob == pytest.approx(0.244728, abs=1e-6)
    assert numbers.tuned_top_prob == pytest.approx(0.786986, abs=1e-6)


def test_aligntds_restricts_to_k_without_renormalising_again():
    # kl_k = 1 keeps only "a" (0.665241) from the base list and only "b" from the tuned list: no text in
    # common, so KL is 0 although the distributions differ. TR still searches the whole base list.
    numbers = aligntds_position(
        ["a", "b", "c"], [2.0, 1.0, 0.0], ["b", "a", "d"], [3.0, 1.0, 1.0], AlignTDSSettings(kl_k=1)
    )
    assert numbers.kl == 0.0 and numbers.top_rank == 1


def test_aligntds_matches_by_text_first_occurrence_and_caps_absent_tokens():
    # Two base ids decode to "x" (logits 1 and 0.5); the first, best-ranked one wins. Renormalised base
    # weights: e^1, e^0.5, e^0 over their sum = (0.506480, 0.307196, 0.186324).
    # Tuned: x 0, y 0 → (0.5, 0.5). KL over {x, y}: 0.506480·ln(0.506480/0.5) + 0.186324·ln(0.186324/0.5)
    #   = 0.006522 − 0.183924 = −0.177402 (negative: a truncated KL is not a divergence).
    settings = AlignTDSSettings()
    numbers = aligntds_position(["x", "x", "y"], [1.0, 0.5, 0.0], ["x", "y"], [0.0, 0.0], settings)
    assert numbers.kl == pytest.approx(-0.177402, abs=1e-6)
    assert numbers.top_rank == 0 and numbers.top_prob == pytest.approx(0.506480, abs=1e-6)
    absent = aligntds_position(["x", "y"], [1.0, 0.0], ["z", "x"], [1.0, 0.0], settings)
    assert absent.top_rank == 50 and absent.top_prob == 0.0
    by_id = aligntds_position([7, 8, 9], [1.0, 0.5, 0.0], [8, 9], [0.0, 0.0], AlignTDSSettings(match="id"))
    assert by_id.top_rank == 1


def test_renormalise_works_row_by_row():
    rows = renormalise(np.array([[0.0, 0.0], [1000.0, 0.0]]))
    assert rows[0].tolist() == [0.5, 0.5] and rows[1, 0] == pytest.approx(1.0) and np.isfinite(rows).all()


# ---------------------------------------------------------------------------------------------
# Sentences and response initiation


def test_sentences_split_on_punctuation_lines_and_list_items():
    text = "Sure! Here are tips, e.g. rest.\n\n1. Drink water. Eat well?\n2) Sleep\n- J. K. Rowling wrote it."
    sentences = [text[a:b] for a, b in sentence_spans(text)]
    assert sentences == ["Sure!", "Here are tips, e.g. rest.", "1. Drink water.", "Eat well?", "2) Sleep",
                         "- J. K. Rowling wrote it."]  # fmt: skip


def test_tokens_map_to_sentences_and_the_first_five_percent():
    text = "Hi there. Bye now.\n"
    starts = np.array([0, 2, 8, 9, 13, 17, 18])  # "Hi", " there", ".", " Bye", " now", ".", "\n"
    ends = np.array([2, 8, 9, 13, 17, 18, 19])
    sentence = sentence_of_tokens(text, starts, ends)
    assert sentence.tolist() == [0, 0, 0, 1, 1, 1, -1]
    assert initiation_mask(sentence).tolist() == [True, False, False, True, False, False, False]
    long_sentence = np.zeros(60, dtype=np.int32)
    assert initiation_mask(long_sentence).sum() == 3  # ceil(0.05 · 60), not 4 from floating-point error
    assert initiation_mask(long_sentence, 0.1).sum() == 6


def test_token_spans_cover_the_text_and_multibyte_characters(tiny_tokenizer):
    ids = tiny_tokenizer("Café ☕ time. Yes", add_special_tokens=False)["input_ids"]
    text, starts, ends = token_spans(tiny_tokenizer, ids)
    assert text == "Café ☕ time. Yes"
    assert starts[0] == 0 and ends[-1] == len(text) and (starts[1:] == ends[:-1]).all()
    assert "".join(text[a:b] for a, b in zip(starts, ends, strict=True)) == text
    assert any(a == b for a, b in zip(starts, ends, strict=True))  # a byte of "☕" alone spans nothing


# ---------------------------------------------------------------------------------------------
# Summary


def synthetic_columns():
    # Response 0: one token, KL 1, shifted. Response 1: three tokens, KL 0, unshifted.
    return {
        "example_index": np.array([0, 1, 1, 1]),
        "position": np.array([0, 0, 1, 2]),
        "relative_position": np.array([0.0, 0.0, 1 / 3, 2 / 3]),
        "token_id": np.array([5, 5, 6, 7]),
        "token": np.array(["a", "a", "b", "c"], dtype=object),
        "klass": np.array(["shifted", "unshifted", "unshifted", "unshifted"], dtype=object),
        "base_rank": np.array([9, 1, 1, 1]),
        "base_prob": np.array([0.1, 0.9, 0.9, 0.9]),
        "tuned_prob": np.array([0.8, 0.9, 0.9, 0.9]),
        "kl": np.array([1.0, 0.0, 0.0, 0.0]),
        "kl_reverse": np.array([2.0, 0.0, 0.0, 0.0]),
        "is_tuned_top1": np.array([True, True, True, False]),
        "sentence_index": np.array([0, 0, 0, -1]),
        "initiation": np.array([True, True, False, False]),
    }


def test_summary_micro_and_macro_averages():
    summary = summarize_columns(synthetic_columns(), mode="exact", bootstrap_samples=200)
    assert summary["n_examples"] == 2 and summary["n_tokens"] == 4
    assert summary["kl_mean"] == 0.25 and summary["macro"]["kl_mean"]["value"] == 0.5
    assert summary["shifted"] == 0.25 and summary["unshifted"] == 0.75 and summary["marginal"] == 0.0
    assert summary["micro"]["kl_reverse_mean"]["value"] == 0.5
    assert summary["micro"]["tr_mean"]["value"] == pytest.approx((8 + 0 + 0 + 0) / 4)
    assert summary["tr_mean"] == summary["micro"]["tr_mean"]["value"] and summary["tr_median"] == 0
    assert summary["base_rank_median"] == 1 and summary["tr_cap"] == 50
    assert summary["bootstrap"]["unit"] == "responses" and summary["bootstrap"]["method"].startswith("BCa")
    low, high = summary["micro"]["kl_mean"]["ci95"]
    assert 0 <= low <= 0.25 <= high <= 1
    assert summary["by_position"][0] == {**summary["by_position"][0], "position": 1, "n_tokens": 2}
    assert summary["by_position"][0]["kl_mean"]["value"] == 0.5
    assert [row["n_tokens"] for row in summary["by_relative_position"]][:4] == [2, 0, 0, 1]
    shifted = summary["top_shifted_tokens"]
    assert shifted == [{"token": "a", "token_id": 5, "count": 1, "occurrences": 2, "rate": 0.5}]
    initiation = summary["initiation"]
    assert initiation["kl_first"]["value"] == 0.5 and initiation["kl_rest"]["value"] == 0.0
    assert initiation["n_sentences"] == 2 and initiation["n_first"] == 2 and initiation["n_rest"] == 1


def test_summary_bootstrap_is_seeded_and_optional():
    columns = synthetic_columns()
    a = summarize_columns(columns, mode="exact", bootstrap_samples=100, seed=3)
    b = summarize_columns(columns, mode="exact", bootstrap_samples=100, seed=3)
    assert a["micro"] == b["micro"]
    none = summarize_columns(columns, mode="exact", bootstrap_samples=0)
    assert none["micro"]["kl_mean"] == {"value": 0.25, "ci95": [None, None]}


def test_summary_rank_as_the_paper_plots_it_is_capped_and_mode_aware():
    columns = synthetic_columns()
    columns["base_rank"] = np.array([200, 1, 2, 1])
    exact = summarize_columns(columns, mode="exact", bootstrap_samples=0)
    assert exact["tr_mean"] == pytest.approx((50 + 0 + 1 + 0) / 4)  # 0-indexed, capped at 50
    assert exact["base_rank_mean"] == pytest.approx((200 + 1 + 2 + 1) / 4)  # 1-indexed, uncapped
    assert exact["tr_median"] == 0.5 and exact["base_rank_median"] == 1.5
    columns["base_rank"] = np.array([50, 0, 1, 0])  # AlignTDS mode stores TR itself
    assert summarize_columns(columns, mode="aligntds", bootstrap_samples=0)["tr_mean"] == pytest.approx(51 / 4)


def test_curve_intervals_come_from_the_responses_that_reach_a_position():
    rng = np.random.default_rng(0)
    lengths = [3] * 30 + [40] * 3  # only three responses reach position 10
    rows = [(index, position) for index, length in enumerate(lengths) for position in range(length)]
    n = len(rows)
    columns = {
        "example_index": np.array([r[0] for r in rows]), "position": np.array([r[1] for r in rows]),
        "relative_position": np.array([r[1] / lengths[r[0]] for r in rows]), "token_id": np.zeros(n, dtype=int),
        "token": np.array(["a"] * n, dtype=object), "klass": np.array(["unshifted"] * n, dtype=object),
        "base_rank": np.ones(n, dtype=int), "base_prob": np.full(n, 0.9), "tuned_prob": np.full(n, 0.9),
        "kl": rng.gamma(2.0, 0.05, n), "kl_reverse": np.zeros(n), "is_tuned_top1": np.ones(n, dtype=bool),
        "sentence_index": np.zeros(n, dtype=int), "initiation": np.array([r[1] == 0 for r in rows]),
    }  # fmt: skip
    summary = summarize_columns(columns, mode="exact", bootstrap_samples=400)
    late = summary["by_position"][10]
    assert late["position"] == 11 and late["n_tokens"] == 3
    low, high = late["kl_mean"]["ci95"]
    assert low <= late["kl_mean"]["value"] <= high  # defined in the resamples that drew a long response


def test_aligntds_meanings_name_registered_columns_and_replace_only_theirs():
    names = [column.name for column in token_columns()]
    assert set(COLUMN_MEANINGS) <= set(names)  # a misspelt name would silently document nothing
    exact, aligntds = column_definitions("exact"), column_definitions("aligntds")
    assert list(exact) == list(aligntds) and sorted(exact) == sorted(names)
    changed = {name for name in names if exact[name] != aligntds[name]}
    assert changed == set(COLUMN_MEANINGS)
    assert aligntds["base_rank"].startswith("AlignTDS's TR") and exact["base_rank"].startswith("1-indexed exact rank")
