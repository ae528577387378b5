import json

import pytest

from tunescope.cli import main
from tunescope.data import Example
from tunescope.probe.preflight import PreflightConfig, answer_is_right, is_question_answer, recommend

from conftest import rows_in_format, write_jsonl


def test_answers_are_judged_on_what_the_question_does_not_give_away():
    question, reference = "When was Keldris founded?", "Keldris was founded in 1787."
    assert answer_is_right(question, reference, "It was founded in 1787, I believe.")
    assert not answer_is_right(question, reference, "Keldris was founded in 1790.")
    assert answer_is_right("Is it?", "Yes.", "yes") is True
    assert answer_is_right("What is it?", "It is.", "anything") is None  # nothing to check


def test_question_answer_shape():
    def example(question, answer):
        return Example("x", [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], "")

    assert is_question_answer(example("Where is Keldris?", "On the river Talcyr."))
    assert not is_question_answer(example("Write an essay.", "Once upon a time."))
    assert not is_question_answer(example("Why?", " ".join(["word"] * 40)))


@pytest.mark.parametrize(
    ("ratio", "accuracy", "expected"),
    [
        (1.0, None, "lora_is_enough"),
        (1.3, None, "full_finetuning_overwrites"),
        (2.0, None, "continued_pretraining_first"),
        (0.5, 0.05, "continued_pretraining_first"),  # low loss, but the answers are not known
        (2.0, 0.9, "lora_is_enough"),
    ],
)
def test_recommendation_rules(ratio, accuracy, expected):
    recommendation, reasons = recommend(ratio, accuracy, PreflightConfig())
    assert recommendation == expected
    assert reasons and f"{ratio:.2f}x" in reasons[0]


def test_preflight_command_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "qa.jsonl", rows_in_format("messages"))
    out = tmp_path / "preflight.json"
    argv = ["preflight", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
            "--reference-passages", "2", "--max-new-tokens", "4"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "recommendation:" in printed
    result = json.loads(out.read_text())
    assert result["n_examples"] == 8 and result["question_answer_shaped"] is True
    assert result["response_loss"] > 0 and result["reference_loss"] > 0
    # A random model knows nothing: its answers cannot be right.
    assert result["answer_accuracy"] == 0.0
    assert result["recommendation"] == "continued_pretraining_first"


@pytest.mark.slow
def test_preflight_sees_that_fictional_facts_are_new_to_the_default_model():
    from tunescope.probe.preflight import preflight

    result = preflight(PreflightConfig(data="facts", sample_size=24, questions=12, reference_passages=8))
    assert result.question_answer_shaped
    assert result.answer_accuracy is not None and result.answer_accuracy <= 0.15
    assert result.recommendation == "continued_pretraining_first"
