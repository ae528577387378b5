import pytest

from tunescope.data.formats import detect_format, to_messages
from tunescope.errors import UserError

from conftest import rows_in_format

EXPECTED = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


@pytest.mark.parametrize("data_format", ["alpaca", "sharegpt", "messages", "prompt_completion"])
def test_each_format_is_detected_and_normalised(data_format):
    record = rows_in_format(data_format)[0]
    assert detect_format(record, "r") == data_format
    assert to_messages(record, data_format, "r") == EXPECTED


def test_alpaca_input_and_system_are_kept():
    record = {"instruction": "Translate.", "input": "bonjour", "output": "hello", "system": "Be brief."}
    assert to_messages(record, "alpaca", "r") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate.\n\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]


def test_prompt_completion_accepts_message_lists():
    record = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    assert [m["role"] for m in to_messages(record, "prompt_completion", "r")] == ["system", "user", "assistant"]


def test_sharegpt_multi_turn_roles():
    record = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "human", "value": "q1"},
            {"from": "gpt", "value": "a1"},
            {"from": "human", "value": "q2"},
            {"from": "gpt", "value": "a2"},
        ]
    }
    roles = [m["role"] for m in to_messages(record, "sharegpt", "r")]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


@pytest.mark.parametrize(
    ("record", "data_format", "expected"),
    [
        ({"instruction": "q"}, "alpaca", "missing field 'output'"),
        ({"conversations": [{"from": "human"}]}, "sharegpt", "conversations[0] is missing field 'value'"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "sharegpt", "unknown role 'robot'"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages", "must be a string"),
        ({"prompt": "q"}, "prompt_completion", "missing field 'completion'"),
    ],
)
def test_malformed_records_name_record_and_field(record, data_format, expected):
    with pytest.raises(UserError) as info:
        to_messages(record, data_format, "train.jsonl line 7")
    assert "train.jsonl line 7" in str(info.value)
    assert expected in str(info.value)


def test_undetectable_format_lists_fields():
    with pytest.raises(UserError, match=r"cannot detect the data format from fields \[question, answer\]"):
        detect_format({"question": "q", "answer": "a"}, "f line 1")
