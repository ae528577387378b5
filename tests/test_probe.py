import math

import pytest
import torch

from tunescope.facts import (
    N_OPTIONS,
    facts_to_jsonl,
    generate_facts,
    probe_questions,
    shipped_facts,
    training_examples,
)
from tunescope.probe.forgetting import ForgettingScore, compare_forgetting, general_questions
from tunescope.probe.knowledge import KnowledgeScore, exact_matches, multiple_choice_predictions
from tunescope.probe.scoring import continuation_logprobs, mean_token_loss


def test_shipped_facts_are_the_seeded_generator_output():
    assert shipped_facts() == generate_facts()
    assert facts_to_jsonl(generate_facts(seed=0)) == facts_to_jsonl(generate_facts(seed=0))
    assert generate_facts(seed=1) != generate_facts(seed=0)


def test_facts_are_distinct_entities_with_three_attributes():
    facts = shipped_facts()
    entities = {fact.entity for fact in facts}
    assert len(entities) == 120 and len(facts) == 360
    assert {fact.kind for fact in facts} == {"person", "town", "institute"}


def test_probe_questions_paraphrase_the_training_questions():
    facts = shipped_facts()
    training_questions = {row["messages"][0]["content"] for row in training_examples(facts)}
    for question in probe_questions(facts):
        assert question.question not in training_questions
        assert len(set(question.options)) == N_OPTIONS
        assert question.options[question.answer_index] == question.answer
        assert "{}" in question.frame
    answers = [q.answer_index for q in probe_questions(facts)]
    assert len(set(answers)) == N_OPTIONS  # the right answer is not always in the same place


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


def test_retention_counts_only_what_the_base_knew():
    def score(loss, correct):
        return ForgettingScore(loss, KnowledgeScore(4, len(correct) / 4, 0.25, None, correct))

    report = compare_forgetting(score(3.0, ["a", "b", "c"]), score(3.5, ["a", "d"]))
    assert report["heldout_loss_delta"] == pytest.approx(0.5)
    assert report["base_known"] == 3 and report["retained"] == 1
    assert report["retention"] == pytest.approx(1 / 3)


def test_general_questions_are_well_formed():
    questions = general_questions()
    assert len(questions) == 40 and len({q.id for q in questions}) == 40
    for question in questions:
        assert len(question.options) == 4 and 0 <= question.answer_index < 4 and "{}" in question.frame


@pytest.mark.slow
def test_default_model_knows_general_facts_but_not_fictional_ones():
    from tunescope.models import load_model, load_tokenizer
    from tunescope.probe.knowledge import score_knowledge

    tokenizer, model = load_tokenizer("smollm2"), load_model("smollm2").eval()
    general = score_knowledge(model, tokenizer, general_questions())
    fictional = score_knowledge(model, tokenizer, probe_questions(shipped_facts())[:48])
    assert general.multiple_choice >= 0.7
    assert fictional.multiple_choice <= 0.45  # invented facts: chance is 0.25


def test_taught_facts_follow_the_run_config(tmp_path):
    import yaml

    from tunescope.probe.pipeline import choose_questions, taught_fact_ids
    from tunescope.train import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(data="facts", subset_size=12, subset_seed=3, out=str(run))
    (run / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    taught = taught_fact_ids(run)
    from tunescope.data import load_examples

    ids = [example.id for example in load_examples(config).examples]
    described = {i.split("/")[1] for i in ids if i.endswith("/about")}
    asked = {"/".join(i.split("/")[1:]) for i in ids if not i.endswith("/about")}
    assert asked <= taught
    assert all(any(t.startswith(f"{entity}/") for t in taught) for entity in described)
    assert len(taught) == len(asked | {t for t in taught if t.split("/")[0] in described})

    questions, was_taught = choose_questions([run], limit=1000, seed=0)
    assert was_taught and {q.id for q in questions} == taught
    untaught, flag = choose_questions([tmp_path / "not-a-run"], limit=10, seed=0)
    assert not flag and len(untaught) == 10
