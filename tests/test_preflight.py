import json

import pytest

from tunescope.cli import main
from tunescope.data import Example
from tunescope.probe.preflight import (
    AnswerTypes,
    PreflightConfig,
    answer_is_right,
    answer_type,
    classify,
    next_step,
    recommend,
)
from tunescope.stats import Estimate, proportion, unavailable

from conftest import rows_in_format, write_jsonl


def qa(question: str, answer: str) -> Example:
    return Example("x", [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "")


def test_answers_are_judged_on_what_the_question_does_not_give_away():
    question, reference = "When was Keldris founded?", "Keldris was founded in 1787."
    assert answer_is_right(question, reference, "It was founded in 1787, I believe.")
    assert not answer_is_right(question, reference, "Keldris was founded in 1790.")
    # The number is the fact: the words around it do not have to be repeated.
    assert answer_is_right("In what year was Velmor born?", "Velmor was born in 1703.", "1703")
    assert not answer_is_right("In what year was Velmor born?", "Velmor was born in 1703.", "He was born in 1650.")
    # Without numbers, most of the added words.
    assert answer_is_right("What is Keldris known for?", "Keldris is known for copper mining.", "copper mining")
    assert not answer_is_right("What is Keldris known for?", "Keldris is known for copper mining.", "salt mining")
    assert answer_is_right("Is it?", "Yes.", "yes") is True
    assert answer_is_right("What is it?", "It is.", "anything") is None  # nothing to check


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("What was Velmor Dakith's profession?", "Velmor Dakith was a cartographer.", "factual"),
        ("How many legs does a spider have", "A spider has eight legs.", "factual"),  # no mark, but a question
        ("Tell me about Keldris.", "Keldris is a town on the river Talcyr.", "not_a_question"),
        ("What do you like to do for fun?", "I like hiking with friends.", "personal"),
        ("Haha\nhow was my move back?", "It went well, everything arrived.", "personal"),
        ("Why did she move?", " ".join(["word"] * 40), "long_answer"),
        ("What is Keldris?", "Keldris is.", "no_key"),
        ("Why is the sky blue?", "Sunlight scatters off air molecules, blue light most, so the sky looks blue "
         "from every direction during the day.", "long_key"),
    ],
)  # fmt: skip
def test_answer_types(question, answer, expected):
    assert answer_type(qa(question, answer)) == expected


def test_multi_turn_examples_are_not_checked_as_facts():
    turns = [{"role": "system", "content": "Be brief."}, *qa("What is 2+2?", "4.").messages]
    assert answer_type(Example("x", turns, "")) == "turns"


def test_the_data_kind_follows_the_interval_of_the_factual_share():
    factual, open_ended = qa("When was Keldris founded?", "In 1787."), qa("How are you?", "Great, thanks!")
    facts = classify([factual] * 30 + [open_ended] * 2)
    assert facts.kind == "facts" and facts.factual == 30 and facts.open_reasons["personal"] == 2
    assert facts.share.ci95[0] >= 0.5 and "30 of 32 examples" in facts.sentence()
    assert classify([factual] * 2 + [open_ended] * 30).kind == "open-ended"
    assert classify([factual] * 5 + [open_ended] * 5).kind == "mixed"  # the interval spans one half
    documents = classify([Example("d", [], "", text="Some prose.")])
    assert documents.kind == "documents" and "no questions" in documents.sentence()


def ratio(value: float, low: float, high: float, n: int = 80) -> Estimate:
    return Estimate(value, n, "ratio of pooled means", (low, high), (low + 0.01, high - 0.01), se=(high - low) / 4)


OPEN = AnswerTypes("open-ended", 64, 5, {"personal": 51}, proportion(5, 64))
FACTS = AnswerTypes("facts", 64, 42, {"not_a_question": 22}, proportion(42, 64))


@pytest.mark.parametrize(
    ("types", "familiarity", "knowledge", "expected"),
    [
        # Chit-chat on the default model: open-ended, and no harder than prose. No continued pre-training.
        (OPEN, ratio(1.04, 0.98, 1.12), None, "lora_is_enough"),
        (OPEN, ratio(1.02, 0.95, 1.08), None, "lora_is_enough"),
        (OPEN, ratio(1.3, 1.15, 1.45), None, "full_finetuning_overwrites"),
        (OPEN, ratio(2.0, 1.7, 2.3), None, "continued_pretraining_first"),
        (OPEN, ratio(1.5, 1.3, 1.7), None, "unsure"),  # spans the threshold of new content
        (OPEN, unavailable(1.2, 3, "ratio", "bootstrap off"), None, "unsure"),
        # The invented facts: the loss looks familiar (answers repeat the question), but no answer is right.
        (FACTS, ratio(0.66, 0.58, 0.73), proportion(0, 32), "continued_pretraining_first"),
        (FACTS, ratio(2.0, 1.8, 2.2), proportion(30, 32), "lora_is_enough"),
        (FACTS, ratio(1.0, 0.9, 1.1), proportion(10, 32), "full_finetuning_overwrites"),
        (FACTS, ratio(1.0, 0.9, 1.1), proportion(2, 12), "unsure"),  # 17% [5%, 45%]: spans 15%
        (FACTS, ratio(1.0, 0.9, 1.1), proportion(6, 12), "unsure"),  # 50% [25%, 75%]: spans 50%
    ],
)
def test_recommendations_follow_the_intervals(types, familiarity, knowledge, expected):
    config = PreflightConfig(data="chitchat" if types is OPEN else "facts")
    advice = recommend(types, familiarity, knowledge, config)
    assert advice.recommendation == expected
    assert advice.decided_by == ("knowledge" if knowledge else "familiarity")
    assert advice.reasons[0] == types.sentence()  # which kind was found, and why
    assert f"{familiarity.value:.2f}" in advice.reasons[1]
    if familiarity.ci95:
        assert f"[{familiarity.ci95[0]:.2f}, {familiarity.ci95[1]:.2f}]" in advice.reasons[1]
    if knowledge is not None:
        low, high = knowledge.ci95
        assert f"[{low:.0%}, {high:.0%}]" in advice.reasons[2]
    command = next_step(advice, config)
    assert command.startswith("tunescope ")
    if expected == "continued_pretraining_first":
        assert "--format text" in command and "cpt+lora" in command
        assert ("facts-text" in command) == (config.data == "facts")
    if expected == "unsure":
        assert command.startswith("tunescope preflight") and "--subset-size 128" in command
    if expected in ("lora_is_enough", "full_finetuning_overwrites"):
        assert f"--data {config.data} --method lora" in command
    assert ("tunescope probe" in command) == (expected == "full_finetuning_overwrites")


def test_preflight_command_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "qa.jsonl", rows_in_format("messages"))
    out = tmp_path / "preflight.json"
    argv = ["preflight", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--subset-size", "6",
            "--reference-passages", "3", "--max-new-tokens", "4", "--min-questions", "2",
            "--bootstrap-samples", "200"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for line in ("examples measured: 6 of 8", "answer type:", "familiarity:", "knowledge:", "recommendation:", "next:"):
        assert line in printed
    result = json.loads(out.read_text())
    assert result["n_examples"] == 6 and result["n_records"] == 8  # --subset-size is what is measured
    types = result["answer_types"]
    assert types["factual"] + sum(types["open_reasons"].values()) == 6
    familiarity = result["familiarity"]
    assert familiarity["n_responses"] == 6 and familiarity["n_passages"] == 3
    low, high = familiarity["ratio"]["ci95"]
    assert low <= familiarity["ratio"]["value"] <= high
    assert familiarity["ratio"]["value"] == pytest.approx(familiarity["response_loss"] / familiarity["reference_loss"])
    if result["knowledge"] is not None:
        assert result["knowledge"]["accuracy"]["ci95"] is not None and result["knowledge"]["asked"] >= 2
    assert result["recommendation"] in ("lora_is_enough", "continued_pretraining_first", "full_finetuning_overwrites",
                                        "unsure")  # fmt: skip
    assert result["next_step"].startswith("tunescope ")


def test_subset_size_has_its_own_help(capsys):
    with pytest.raises(SystemExit):
        main(["preflight", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--subset-size SUBSET_SIZE Examples to measure" in help_text and "Train on the first" not in help_text


@pytest.mark.slow
def test_preflight_does_not_advise_continued_pretraining_for_chit_chat():
    from tunescope.probe.preflight import preflight

    result = preflight(PreflightConfig(data="chitchat", subset_size=32, reference_passages=8))
    assert result.answer_types["kind"] == "open-ended" and result.knowledge is None
    assert result.recommendation == "lora_is_enough", result.reasons
    low, high = result.familiarity["ratio"]["ci95"]
    assert high < 1.5 and low <= result.familiarity["ratio"]["value"] <= high
    assert result.next_step.startswith("tunescope train --model smollm2 --data chitchat --method lora")


@pytest.mark.slow
def test_preflight_advises_continued_pretraining_for_the_invented_facts():
    from tunescope.probe.preflight import preflight

    config = PreflightConfig(data="facts", subset_size=40, questions=24, reference_passages=8, max_new_tokens=24)
    result = preflight(config)
    assert result.answer_types["kind"] in ("facts", "mixed") and result.knowledge["asked"] >= 22
    assert result.knowledge["accuracy"]["ci95"][1] <= 0.15, result.knowledge
    assert result.recommendation == "continued_pretraining_first" and result.decided_by == "knowledge"
    assert "facts-text --format text" in result.next_step
