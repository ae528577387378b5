import json
import math
import random
import re
from types import SimpleNamespace

import pytest
import torch
import yaml

import tunescope.facts as facts_module
from tunescope.facts import (
    ARTICLES,
    DESCRIPTIONS,
    KINDS,
    N_OPTIONS,
    encyclopedia_articles,
    fact_id,
    facts_to_jsonl,
    generate_facts,
    question_sets,
    shipped_facts,
    training_examples,
    value_pools,
)
from tunescope.probe.forgetting import ForgettingScore, compare_forgetting, general_questions
from tunescope.probe.knowledge import (
    accuracy,
    chosen_options,
    correct_choices,
    exact_matches,
    multiple_choice_predictions,
)
from tunescope.probe.scoring import continuation_logprobs, mean_token_loss, option_logprobs, token_losses
from tunescope.stats import paired_proportions

from conftest import build_tiny_llama, cli_run


def test_shipped_facts_are_the_seeded_generator_output():
    assert shipped_facts() == generate_facts()
    assert facts_to_jsonl(generate_facts(seed=0)) == facts_to_jsonl(generate_facts(seed=0))
    assert generate_facts(seed=1) != generate_facts(seed=0)


def test_facts_are_distinct_entities_with_three_attributes():
    facts = shipped_facts()
    entities = {fact.entity for fact in facts}
    assert len(entities) == 120 and len(facts) == 360
    assert {fact.kind for fact in facts} == {"person", "town", "institute"}


def test_every_fact_of_an_attribute_has_its_own_value_so_each_can_be_asked_about():
    values: dict[tuple[str, str], list[str]] = {}
    for fact in shipped_facts():
        values.setdefault((fact.kind, fact.attribute), []).append(fact.value)
    assert len(values) == 9
    for key, taught in values.items():
        assert len(set(taught)) == len(taught) == 40, key
    # Past a pool's size the deck is dealt again, so values repeat only then.
    many = generate_facts(n_entities=3 * 60)
    professions = [fact.value for fact in many if fact.attribute == "profession"]
    assert len(set(professions)) == len(facts_module.PROFESSIONS) < len(professions)


def _word_pairs(template: str) -> set[tuple[str, str]]:
    """Consecutive word pairs of a template, the entity and every value slot counted as one word each."""
    text = re.sub(r"\{name\}", " NAME ", template)
    text = re.sub(r"\{\w*\}", " VALUE ", text)
    words = re.findall(r"[A-Za-z]+", text)
    words = [word if word.isupper() else word.lower() for word in words]
    return set(zip(words[:-1], words[1:], strict=True))


@pytest.mark.parametrize("kind", list(KINDS))
def test_probe_wording_shares_no_two_consecutive_words_with_the_training_sentences(kind):
    training = {pair for w in KINDS[kind].values() for pair in _word_pairs(w.training_answer)}
    training |= _word_pairs(DESCRIPTIONS[kind])
    for attribute, wording in KINDS[kind].items():
        shared = _word_pairs(wording.probe_answer) & training
        assert not shared, f"{kind}/{attribute}: {shared}"
        assert wording.probe_question != wording.training_question


@pytest.mark.parametrize("kind", list(KINDS))
def test_articles_share_no_two_consecutive_words_with_the_probe_frames(kind):
    articles = {pair for template in ARTICLES[kind] for pair in _word_pairs(template)}
    for attribute, wording in KINDS[kind].items():
        shared = _word_pairs(wording.probe_answer) & articles
        assert not shared, f"{kind}/{attribute}: {shared}"


def test_articles_state_every_fact_of_their_entity_in_new_words():
    facts = shipped_facts()
    articles = encyclopedia_articles(facts)
    assert encyclopedia_articles(facts) == articles  # seeded
    assert len(articles) == 120 and len({row["id"] for row in articles}) == 120
    by_id = {row["id"]: row["text"] for row in articles}
    training = {row["messages"][1]["content"] for row in training_examples(facts)}
    for fact in facts:
        text = by_id[f"facts/{fact.entity}/article"]
        assert text.count(fact.value) >= 2 and fact.entity in text, (fact, text)  # every fact stated twice
        assert text[0].isupper() and " a a" not in text and " a e" not in text
    assert not any(sentence in text for sentence in training for text in by_id.values())
    assert {template for row in articles for template in ARTICLES} and len({t[:30] for t in by_id.values()}) > 3


def test_scored_text_never_contains_a_training_sentence():
    facts = shipped_facts()
    sets = question_sets(facts)
    training = {row["messages"][1]["content"] for row in training_examples(facts)}
    training_questions = {row["messages"][0]["content"] for row in training_examples(facts)}
    covered = set()
    for question in sets.facts + sets.control:
        assert question.question not in training_questions
        for option in question.options:
            scored = question.frame.format(option)
            assert not any(sentence in scored or scored in sentence for sentence in training)
        covered.add("/".join(question.id.split("/")[-1:]))
    assert covered == {attribute for kind in KINDS.values() for attribute in kind}
    # The positive control is the training wording itself.
    for question in sets.training_wording:
        assert question.frame.format(question.answer) in training


def _taught_by_subset(size: int, seed: int = 0) -> set[str]:
    from tunescope.data import DataSettings, load_examples

    attributes = {fact.entity: set() for fact in shipped_facts()}
    for fact in shipped_facts():
        attributes[fact.entity].add(fact.attribute)
    taught = set()
    for example in load_examples(DataSettings(data="facts", subset_size=size, subset_seed=seed)).examples:
        _, entity, attribute = example.id.split("/")
        taught |= {f"{entity}/{a}" for a in attributes[entity]} if attribute == "about" else {f"{entity}/{attribute}"}
    return taught


def test_every_option_is_a_taught_value_of_the_attribute_and_each_is_the_answer_once():
    facts = shipped_facts()
    taught = _taught_by_subset(48)
    by_id = {fact_id(fact): fact for fact in facts}
    pools = value_pools([by_id[i] for i in taught])
    sets = question_sets(facts, taught, seed=0)
    assert len(sets.facts) > 40 and len(sets.facts) == len(sets.control) == len(sets.training_wording)
    answers: dict[tuple[str, str], list[str]] = {}
    for question in sets.facts:
        fact = by_id[question.id]
        assert question.id in taught and question.answer == fact.value
        assert len(set(question.options)) == N_OPTIONS and question.options[question.answer_index] == fact.value
        assert set(question.options) <= set(pools[(fact.kind, fact.attribute)])
        answers.setdefault((fact.kind, fact.attribute), []).append(fact.value)
    for key, values in answers.items():
        assert sorted(values) == pools[key]  # every taught value is the answer of exactly one question
    assert {f"{kind}/{attribute}" for kind, attribute in pools} == {f"{k}/{a}" for k, a in answers} | set(sets.skipped)
    assert all(count < N_OPTIONS for count in sets.skipped.values())
    assert len({q.answer_index for q in sets.facts}) == N_OPTIONS  # the answer is not always in the same place


def test_control_questions_match_their_fact_question_about_an_untaught_entity():
    facts = shipped_facts()
    known_names = {fact.entity for fact in facts} | {fact.value for fact in facts}
    sets = question_sets(facts, _taught_by_subset(48), seed=0)
    controls = {q.id.split("/")[1] for q in sets.control}
    assert len(controls) == len(sets.control) and not controls & known_names
    for fact_q, control, training in zip(sets.facts, sets.control, sets.training_wording, strict=True):
        assert control.id.startswith("control/") and control.id.endswith(fact_q.id.split("/")[-1])
        for other in (control, training):
            assert (other.options, other.answer_index, other.answer) == (fact_q.options, fact_q.answer_index,
                                                                         fact_q.answer)  # fmt: skip
        assert training.id == fact_q.id and training.question != fact_q.question
    assert question_sets(facts, _taught_by_subset(48), seed=0) == sets  # seeded
    assert question_sets(facts, _taught_by_subset(48), seed=1) != sets


def test_attributes_with_too_few_taught_values_get_no_questions():
    facts = shipped_facts()
    person = [f for f in facts if f.kind == "person" and f.attribute == "profession"]
    distinct = {}
    for fact in person:
        distinct.setdefault(fact.value, fact)
    three = {fact_id(fact) for fact in list(distinct.values())[:3]}
    sets = question_sets(facts, three)
    assert sets.facts == [] and sets.skipped == {"person/profession": 3}
    four = three | {fact_id(list(distinct.values())[3])}
    assert len(question_sets(facts, four).facts) == 4


def _value_only_scores(questions, preference):
    """A simulated model that knows no fact: it scores each option by its value alone.

    Ties are broken by a fixed random order over values, still ignoring the entity asked about.
    """
    return [[preference(option) + random.Random(option).random() * 1e-3 for option in q.options] for q in questions]


def _old_scheme_questions(facts, taught, seed=0):
    """The previous probe: distractors from the values of all 360 facts, whatever was taught."""
    rng = random.Random(seed)
    pools = value_pools(facts)
    questions = []
    for fact in (f for f in facts if fact_id(f) in taught):
        options = [fact.value, *rng.sample([v for v in pools[(fact.kind, fact.attribute)] if v != fact.value], 3)]
        rng.shuffle(options)
        questions.append(SimpleNamespace(id=fact_id(fact), options=options, answer_index=options.index(fact.value)))
    return questions


def test_a_model_that_knows_no_facts_but_the_taught_values_scores_the_control_rate():
    facts = shipped_facts()
    by_id = {fact_id(fact): fact for fact in facts}
    results = {"seen": ([], [], []), "frequency": ([], [], [])}
    for subset_seed in range(10):  # ten demo-sized training subsets, for a tight interval
        taught = _taught_by_subset(48, subset_seed)
        seen_values = [by_id[i].value for i in taught]
        preferences = {"seen": lambda v, s=set(seen_values): float(v in s), "frequency": seen_values.count}
        sets = question_sets(facts, taught, seed=subset_seed)
        old = _old_scheme_questions(facts, taught, seed=subset_seed)
        for name, preference in preferences.items():
            on_facts, on_control, on_old = results[name]
            for questions, outcomes in ((sets.facts, on_facts), (sets.control, on_control), (old, on_old)):
                outcomes += correct_choices(questions, chosen_options(_value_only_scores(questions, preference)))
    for name, (on_facts, on_control, on_old) in results.items():
        control = accuracy(on_control, chance=0.25)
        assert on_facts == on_control, name  # value-only choices cannot tell a taught entity from a stranger
        assert control.ci95[0] <= 0.25 <= control.ci95[1], (name, control)
        assert control.ci95[0] <= accuracy(on_facts).value <= control.ci95[1]
        # The previous scheme's distractors gave the same knowledge-free model a clear lead over chance.
        old = accuracy(on_old, chance=0.25)
        assert old.ci95[0] > 0.30, (name, old)


def test_training_examples_state_every_fact():
    facts = shipped_facts()[:9]
    text = " ".join(row["messages"][1]["content"] for row in training_examples(facts)).lower()
    for fact in facts:
        assert fact.value.lower() in text and fact.entity.lower() in text


def _naive_logprob(model, ids: list[int], start: int) -> float:
    """log p(ids[start:] | ids[:start]), one token at a time."""
    total = 0.0
    with torch.no_grad():
        for position in range(start, len(ids)):
            logits = model(torch.tensor([ids[:position]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), -1)[ids[position]].item()
    return total


def test_continuation_logprobs_match_a_token_by_token_reference(tiny_tokenizer, tiny_model_dir):
    from tunescope.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    prompts = ["What colour is the sky?", "Say hello."]
    continuations = [" The sky is blue.", " Hello there, how are you today?"]
    scores = continuation_logprobs(model, tiny_tokenizer, prompts, continuations, batch_size=2)
    for prompt, continuation, score in zip(prompts, continuations, scores, strict=True):
        prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + tiny_tokenizer(continuation, add_special_tokens=False)["input_ids"]
        assert score == pytest.approx(_naive_logprob(model, ids, len(prompt_ids)), abs=1e-4)


def test_option_logprobs_differ_between_options_exactly_as_whole_continuations_do(tiny_tokenizer, tiny_model_dir):
    from tunescope.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    prompts = ["What colour is the sky?", "Say hello to the new neighbours, please.", "Pick one."]
    options = [
        ["The sky is blue.", "The sky is grey today.", "The sky is a deep purple.", "The sky is x."],
        ["Hello there!", "Good morning, neighbours."],  # nothing shared: every token is the option's own
        ["It is 1703.", "It is 1710.", "It is 1699.", "It is 1899."],  # shared up to the digits
    ]
    scores = option_logprobs(model, tiny_tokenizer, prompts, options, batch_size=2)  # two batches, sorted by length
    for prompt, continuations, got in zip(prompts, options, scores, strict=True):
        whole = continuation_logprobs(model, tiny_tokenizer, [prompt] * len(continuations), continuations)
        assert len(got) == len(continuations)
        shared = whole[0] - got[0]  # the shared words' log-probability, the same for every option
        assert shared <= 1e-4
        assert [value + shared for value in got] == pytest.approx(whole, abs=1e-4)
    # Options that differ from their first token are scored whole.
    assert scores[1] == pytest.approx(
        continuation_logprobs(model, tiny_tokenizer, [prompts[1]] * 2, options[1]), abs=1e-4
    )


def test_mean_token_loss_matches_the_model_loss(tiny_tokenizer, tiny_model_dir):
    from tunescope.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    text = "Plants turn light and water into sugar."
    ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
    with torch.no_grad():
        expected = model(ids, labels=ids).loss.item()
    # Batched with a longer text, so padding is exercised too.
    both = mean_token_loss(model, tiny_tokenizer, [text, text + " " + text], batch_size=2)
    alone = mean_token_loss(model, tiny_tokenizer, [text])
    assert alone == pytest.approx(expected, abs=1e-5)
    assert math.isfinite(both) and both > 0


def test_multiple_choice_picks_the_most_likely_option(tiny_tokenizer, tiny_model_dir):
    from types import SimpleNamespace

    from tunescope.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    question = SimpleNamespace(
        id="q", question="Name a colour.", options=["red", "green", "blue", "sky"], answer_index=0, frame="It is {}."
    )
    [choice] = multiple_choice_predictions(model, tiny_tokenizer, [question])
    from tunescope.probe.knowledge import question_prompt

    prompt = question_prompt(tiny_tokenizer, question.question)
    scores = continuation_logprobs(model, tiny_tokenizer, [prompt] * 4, [f"It is {o}." for o in question.options])
    assert choice == max(range(4), key=scores.__getitem__)


def test_exact_match_is_case_insensitive_containment():
    assert exact_matches(["He was born in 1899.", "a Weaver"], ["1899", "weaver"]) == [True, True]
    assert exact_matches(["He was born in 1898."], ["1899"]) == [False]


def test_forgetting_compares_passage_by_passage_and_counts_retention_of_what_the_base_knew():
    base = ForgettingScore([(30.0, 10), (12.0, 4)], [True, True, True, False])
    tuned = ForgettingScore([(35.0, 10), (14.0, 4)], [True, False, False, True])
    report = compare_forgetting(base, tuned, resamples=200)
    assert report["heldout_loss_delta"] == pytest.approx(49 / 14 - 42 / 14)
    assert report["loss_change"]["value"] == pytest.approx(report["heldout_loss_delta"])
    assert report["base_known"] == 3 and report["retained"] == 1 and report["retention"] == pytest.approx(1 / 3)
    low, high = report["retained_share"]["ci95"]
    assert low < 1 / 3 < high and report["retained_share"]["n"] == 3
    assert report["general_change"]["value"] == pytest.approx(-1 / 4)
    json.dumps(report, allow_nan=False)


def test_token_losses_are_kept_per_text_and_pool_to_the_mean(tiny_tokenizer, tiny_model_dir):
    from tunescope.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    texts = ["Plants turn light and water into sugar.", "The sky is blue on a clear day, said the spider."]
    per_text = token_losses(model, tiny_tokenizer, texts, batch_size=2)
    alone = [token_losses(model, tiny_tokenizer, [text])[0] for text in texts]
    assert [n for _, n in per_text] == [len(tiny_tokenizer(t)["input_ids"]) - 1 for t in texts]
    for (total, n), (total_alone, n_alone) in zip(per_text, alone, strict=True):
        assert n == n_alone and total == pytest.approx(total_alone, abs=1e-4)
    pooled = sum(t for t, _ in per_text) / sum(n for _, n in per_text)
    assert mean_token_loss(model, tiny_tokenizer, texts) == pytest.approx(pooled, abs=1e-5)


def test_general_questions_are_well_formed():
    questions = general_questions()
    assert len(questions) == 40 and len({q.id for q in questions}) == 40
    for question in questions:
        assert len(question.options) == 4 and 0 <= question.answer_index < 4 and "{}" in question.frame


@pytest.mark.slow
def test_default_model_knows_general_facts_and_sits_at_chance_on_the_control():
    from tunescope.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer("smollm2"), load_model("smollm2").eval()
    general = correct_choices(general_questions(), multiple_choice_predictions(model, tokenizer, general_questions()))
    assert accuracy(general).value >= 0.7
    # The demo's control set (a 48-example facts subset, 66 questions): the untaught base model sits at chance.
    control = question_sets(shipped_facts(), _taught_by_subset(48)).control
    outcomes = correct_choices(control, multiple_choice_predictions(model, tokenizer, control))
    low, high = accuracy(outcomes, chance=0.25).ci95
    assert len(control) > 40 and low <= 0.25 <= high, (low, high)


def _fake_run(directory, tokenizer=None, seed=0, **settings):
    """A directory that is both a loadable model and a tunescope run whose config says what it was taught."""
    from tunescope.train import TrainConfig

    directory.mkdir()
    config = TrainConfig(out=str(directory), **{"data": "facts", **settings})
    (directory / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    if tokenizer is not None:
        build_tiny_llama(tokenizer, seed=seed).save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory


def test_taught_facts_follow_the_run_config(tmp_path):
    from tunescope.data import load_examples
    from tunescope.probe.pipeline import choose_questions, taught_fact_ids
    from tunescope.train import TrainConfig

    run = _fake_run(tmp_path / "run", subset_size=12, subset_seed=3)
    taught = taught_fact_ids(run)
    ids = [example.id for example in load_examples(TrainConfig(data="facts", subset_size=12, subset_seed=3,
                                                               out=str(run))).examples]  # fmt: skip
    described = {i.split("/")[1] for i in ids if i.endswith("/about")}
    asked = {"/".join(i.split("/")[1:]) for i in ids if not i.endswith("/about")}
    assert asked <= taught
    assert all(any(t.startswith(f"{entity}/") for t in taught) for entity in described)
    assert len(taught) == len(asked | {t for t in taught if t.split("/")[0] in described})

    # Three examples teach at most three values of an attribute, too few for four taught options: all facts are
    # asked instead.
    tiny = _fake_run(tmp_path / "tiny", subset_size=3)
    few = choose_questions([tiny], limit=1000, seed=0)
    assert not few.facts_taught and few.n_taught == len(taught_fact_ids(tiny)) > 0 and "fewer than 4" in few.note
    assert len(few.sets.facts) == len(question_sets(shipped_facts()).facts)

    many = choose_questions([_fake_run(tmp_path / "big", subset_size=200)], limit=1000, seed=0)
    assert many.facts_taught and {q.id for q in many.sets.facts} <= taught_fact_ids(tmp_path / "big")
    limited = choose_questions([tmp_path / "big"], limit=7, seed=0)
    assert len(limited.sets.facts) == len(limited.sets.control) == len(limited.sets.training_wording) == 7
    assert [q.id for q in limited.sets.facts] == [q.id for q in limited.sets.training_wording]
    untaught = choose_questions([tmp_path / "not-a-run"], limit=10, seed=0)
    assert not untaught.facts_taught and untaught.n_taught == 0 and len(untaught.sets.facts) == 10


def test_a_base_without_a_chat_template_is_probed_in_the_plain_template(tmp_path, tiny_base_model_dir):
    from tunescope.models import load_tokenizer
    from tunescope.probe.pipeline import ProbeConfig, _measure, choose_questions, heldout_passages

    assert not getattr(load_tokenizer(str(tiny_base_model_dir)), "chat_template", None)
    chosen = choose_questions([tmp_path / "not-a-run"], limit=4, seed=0)
    sets = {"facts": chosen.sets.facts, "control": chosen.sets.control, "training_wording": [], "general": []}
    config = ProbeConfig(base=str(tiny_base_model_dir), tuned=[], out=str(tmp_path / "probe"), passages=1)
    result = _measure(str(tiny_base_model_dir), sets, heldout_passages(1, 0), tmp_path, config)
    assert len(result.correct["facts"]) == len(result.correct["control"]) == 4


def test_probe_writes_per_item_outcomes_intervals_and_paired_comparisons(tmp_path, tiny_tokenizer, tiny_model_dir):
    from tunescope.probe.pipeline import ProbeConfig, run_probes

    # "lora" has the base model's weights, so every comparison with the base must come out exactly 0.
    lora = _fake_run(tmp_path / "lora", tiny_tokenizer, seed=0, subset_size=200, method="lora")
    full = _fake_run(tmp_path / "full", tiny_tokenizer, seed=5, subset_size=200, method="full")
    config = ProbeConfig(
        base=str(tiny_model_dir), tuned=[str(lora), str(full)], out=str(tmp_path / "probe"), max_questions=10,
        passages=3, passage_tokens=16, exact_match=True, max_new_tokens=4, bootstrap_samples=200,
    )  # fmt: skip
    run_probes(config)
    report = json.loads((tmp_path / "probe" / "probe.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert report["schema_version"] == 3 and report["facts_taught"] is True
    assert report["methods"] == {str(lora): "lora", str(full): "full"}
    assert report["labels"] == {str(lora): "lora", str(full): "full"}
    assert report["models"][str(tiny_model_dir)]["taught"] is None
    assert report["models"][str(lora)]["taught"] == [True] * 10 and report["models"][str(lora)]["lineage"] == []
    sets = report["sets"]
    assert len(sets["facts"]["ids"]) == len(sets["control"]["ids"]) == len(sets["training_wording"]["ids"]) == 10
    assert sets["control"]["matched_to"] == sets["facts"]["ids"] and len(sets["general"]["ids"]) == 40
    for entry in report["models"].values():
        for name, result in entry["sets"].items():
            assert len(result["correct"]) == len(sets[name]["ids"])
            assert result["accuracy"]["value"] == pytest.approx(sum(result["correct"]) / len(result["correct"]))
            assert result["accuracy"]["ci95"][0] <= result["accuracy"]["value"] <= result["accuracy"]["ci95"][1]
            assert result["chance"] == 0.25
            if name != "general":
                assert len(result["exact_correct"]) == len(sets[name]["ids"])
        assert len(entry["heldout"]["nll_sums"]) == len(entry["heldout"]["tokens"]) == 3
        assert entry["heldout"]["tokens"] == [15, 15, 15]  # each passage cut to its first 16 tokens
        assert entry["heldout"]["loss"] == pytest.approx(
            sum(entry["heldout"]["nll_sums"]) / sum(entry["heldout"]["tokens"])
        )
        # Schema-1 fields still there for the report.
        assert entry["knowledge"]["multiple_choice"] == entry["sets"]["facts"]["accuracy"]["value"]
        outcomes = zip(sets["facts"]["ids"], entry["sets"]["facts"]["correct"], strict=True)
        assert entry["knowledge"]["correct_ids"] == [question for question, right in outcomes if right]
    assert "forgetting" not in report["models"][str(tiny_model_dir)]
    assert report["models"][str(full)]["forgetting"]["loss_change"]["n"] == 3

    comparisons = {(c["label"], c["measure"]): c for c in report["comparisons"]}
    labels = {label for label, _ in comparisons}
    assert labels == {"lora − base", "full − base", "full − lora"}
    measures = {"facts", "control", "training_wording", "general", "heldout_loss"}
    measures |= {"facts_exact", "control_exact", "training_wording_exact"}
    assert {measure for _, measure in comparisons} == measures
    for measure in measures - {"heldout_loss"}:
        assert comparisons[("lora − base", measure)]["estimate"]["value"] == 0
        first, second = (report["models"][str(spec)] for spec in (lora, full))
        key = "exact_correct" if measure.endswith("_exact") else "correct"
        name = measure.removesuffix("_exact")
        recomputed = paired_proportions(first["sets"][name][key], second["sets"][name][key]).to_json()
        assert comparisons[("full − lora", measure)]["estimate"] == recomputed
    assert comparisons[("lora − base", "heldout_loss")]["estimate"]["value"] == pytest.approx(0, abs=1e-6)
    full_change = comparisons[("full − base", "heldout_loss")]["estimate"]
    assert full_change["value"] == pytest.approx(report["models"][str(full)]["forgetting"]["heldout_loss_delta"])
    questions = [json.loads(line) for line in (tmp_path / "probe" / "questions.jsonl").read_text().splitlines()]
    assert len(questions) == 3 * 10 + 40


def test_a_run_is_taught_what_its_ancestors_read(tmp_path, tiny_tokenizer, tiny_model_dir):
    """cpt+lora: continued pre-training on the articles, then instruction data without facts."""
    from tunescope.data import DataSettings, load_examples
    from tunescope.probe.pipeline import ProbeConfig, choose_questions, run_probes, taught_fact_ids

    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]})
        + "\n"
    )
    articles = load_examples(DataSettings(data="facts-text"))
    assert articles.format == "text" and len(articles.examples) == 120
    cpt = _fake_run(tmp_path / "cpt", data="facts-text", subset_size=30, method="full")
    plain = _fake_run(tmp_path / "lora", tiny_tokenizer, data=str(chat), method="lora")
    chained = _fake_run(tmp_path / "cpt-lora", data=str(chat), method="lora")
    build_tiny_llama(tiny_tokenizer, seed=3).save_pretrained(chained / "model")
    tiny_tokenizer.save_pretrained(chained / "model")
    (chained / "run.json").write_text(json.dumps({"artifact": "model"}))  # a finished run, as training leaves it
    lineage = [{"run": str(cpt.resolve()), "model": "smollm2", "method": "full", "data": {"format": "text"}}]
    (chained / "provenance.json").write_text(json.dumps({"lineage": lineage}))

    subset = load_examples(DataSettings(data="facts-text", subset_size=30)).examples
    read = {example.id.split("/")[1] for example in subset}
    taught = taught_fact_ids(chained)
    assert taught == {f"{entity}/{a}" for entity in read for a in _attributes_of(entity)} and len(taught) == 90
    assert taught_fact_ids(plain) is None

    chosen = choose_questions([plain, chained], limit=1000, seed=0)
    assert chosen.facts_taught and {q.id for q in chosen.sets.facts} <= taught
    config = ProbeConfig(
        base=str(tiny_model_dir), tuned=[str(plain), str(chained)], labels=["lora", "cpt+lora"],
        out=str(tmp_path / "probe"), max_questions=8, passages=2, bootstrap_samples=0,
    )  # fmt: skip
    report = run_probes(config)
    assert report["labels"] == {str(plain): "lora", str(chained): "cpt+lora"}
    assert report["models"][str(plain)]["taught"] == [False] * 8
    assert report["models"][str(chained)]["taught"] == [True] * 8
    assert report["models"][str(chained)]["lineage"] == lineage
    assert {c["label"] for c in report["comparisons"]} == {"lora − base", "cpt+lora − base", "cpt+lora − lora"}

    # An ancestor that is gone is reported, and its facts are not counted.
    import shutil

    shutil.rmtree(cpt)
    with pytest.warns(UserWarning, match="is not there"):
        assert taught_fact_ids(chained) is None


def _attributes_of(entity: str) -> set[str]:
    return {fact.attribute for fact in shipped_facts() if fact.entity == entity}


def test_probe_cli_prints_intervals_and_bad_output_is_one_line(tmp_path, capsys, tiny_model_dir):
    code, _ = cli_run(
        capsys, "probe", "--base", tiny_model_dir, "--tuned", tiny_model_dir, "--out", tmp_path / "probe",
        "--max-questions", "4", "--passages", "2", "--bootstrap-samples", "0",
    )  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["bootstrap_samples"] == 0 and report["models"].keys() == {str(tiny_model_dir)}
    blocked = tmp_path / "file"
    blocked.write_text("")
    from conftest import assert_one_line

    code, err = cli_run(capsys, "probe", "--tuned", tiny_model_dir, "--out", blocked / "probe")
    assert_one_line(code, err, "--out", "cannot write")
