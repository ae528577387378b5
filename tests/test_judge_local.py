"""Slow tier: the local transformers backend with the embedded default model as a stand-in judge."""

import pytest

from tunescope.judge import ASPECTS, JudgeConfig, judge

from conftest import write_jsonl

pytestmark = pytest.mark.slow

ANSWERS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name three primary colours.", "Red, blue and yellow."),
    ("How many legs does a spider have?", "Spiders have six legs."),
]


def test_default_local_judge_scores_and_is_labelled_a_stand_in(tmp_path):
    data = write_jsonl(
        tmp_path / "answers.jsonl",
        [{"id": f"q{i}", "instruction": question, "output": answer} for i, (question, answer) in enumerate(ANSWERS)],
    )
    settings = JudgeConfig(
        responses=[str(data)], out=str(tmp_path / "judge"), max_tokens=128, cache_dir=str(tmp_path / "cache"),
        bootstrap_samples=100,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="small stand-in judge"):
        result = judge(settings)

    summary = result.summary
    assert summary["judge"]["backend"] == "hf" and summary["judge"]["model"] == "smollm2"
    assert summary["stand_in_judge"] is True and "stand-in judge (smollm2, 135M parameters)" in summary["note"]
    assert 100e6 < summary["judge"]["parameters"] < 200e6
    records = list(result.stats.records.values())
    assert len(records) == 3 and result.stats.sent == 3
    for record in records:
        assert record["judge"]["stand_in"] is True
        assert record["usage"]["completion_tokens"] <= 128
        # Decoding is constrained to the schema: one JSON object, every aspect scored 1-5, within the budget.
        assert record["raw"].startswith('{"helpfulness": {"reason": "')
        assert record["failures"] == {} and set(record["scores"]) == set(ASPECTS), record["raw"]
        assert all(1 <= score <= 5 for score in record["scores"].values())
    model = summary["models"]["answers"]
    scored = sum(len(record["scores"]) for record in records)
    assert sum(model["aspects"][aspect]["n"] for aspect in ASPECTS) == scored
    assert scored == 3 * len(ASPECTS) and model["failures"]["aspect_failures"] == 0
    assert (result.out / "radar.png").is_file()

    # The same judgements elsewhere come from the cache: the model is not asked again.
    again = judge(settings.model_copy(update={"out": str(tmp_path / "again")}))
    assert again.stats.cache_hits == 3 and again.stats.sent == 0
    assert [r["scores"] for r in again.stats.records.values()] == [r["scores"] for r in records]
