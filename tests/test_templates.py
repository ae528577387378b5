import pytest

from tunescope.data import IGNORE_INDEX, Example, tokenize_examples
from tunescope.data.templates import NAMED_TEMPLATES, apply_template_choice, render_prompt
from tunescope.errors import UserError


def _trained_text(tokenizer, tokenized):
    pairs = zip(tokenized.input_ids, tokenized.labels, strict=True)
    return tokenizer.decode([token for token, label in pairs if label != IGNORE_INDEX])


@pytest.fixture
def tokenizer(tiny_tokenizer):
    import copy

    return copy.deepcopy(tiny_tokenizer)


def conversation(*turns):
    roles = ["user", "assistant"] * len(turns)
    return Example("ex", [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)], "test")


def test_only_assistant_turns_and_their_end_token_are_trained(tokenizer):
    [tokenized] = tokenize_examples(tokenizer, [conversation("Say hello.", "Hello there.")], max_length=512)
    assert _trained_text(tokenizer, tokenized) == "Hello there.<|im_end|>\n"
    assert tokenized.labels[0] == IGNORE_INDEX
    # Labels, where set, equal the input ids (the collator shifts them, not us).
    pairs = zip(tokenized.input_ids, tokenized.labels, strict=True)
    assert all(label in (IGNORE_INDEX, token) for token, label in pairs)


def test_every_assistant_turn_of_a_multi_turn_conversation(tokenizer):
    example = conversation("q one", "first answer", "q two", "second answer")
    [tokenized] = tokenize_examples(tokenizer, [example], max_length=512)
    trained = _trained_text(tokenizer, tokenized)
    assert trained == "first answer<|im_end|>\nsecond answer<|im_end|>\n"


def test_train_on_all(tokenizer):
    [tokenized] = tokenize_examples(tokenizer, [conversation("q", "a")], max_length=512, train_on="all")
    assert tokenized.labels == tokenized.input_ids


def test_truncation_keeps_the_beginning(tokenizer):
    [full] = tokenize_examples(tokenizer, [conversation("What colour is the sky?", "Blue.")], max_length=512)
    [cut] = tokenize_examples(tokenizer, [conversation("What colour is the sky?", "Blue.")], max_length=10)
    assert cut.input_ids == full.input_ids[:10]
    assert cut.full_length == len(full.input_ids)
    assert cut.trained_tokens == 0


def test_plain_template_for_models_without_one(tokenizer):
    assert apply_template_choice(tokenizer, None) is None  # the tokenizer's own ChatML stays
    tokenizer.chat_template = None
    assert apply_template_choice(tokenizer, None) == "plain"
    assert apply_template_choice(tokenizer, None) == "plain"  # now its own, as a tuned model saves it
    example = conversation("q one", "first answer", "q two", "second answer")
    [tokenized] = tokenize_examples(tokenizer, [example], max_length=512)
    assert tokenizer.decode(tokenized.input_ids) == (
        "<|im_start|>User:\nq one\n\nAssistant:\nfirst answer<|im_end|>\n\nUser:\nq two\n\nAssistant:\n"
        "second answer<|im_end|>"
    )
    # Answers and their EOS carry the loss, so generation learns to stop; the prompt ends with the header.
    assert _trained_text(tokenizer, tokenized) == "first answer<|im_end|>second answer<|im_end|>"
    assert render_prompt(tokenizer, example.messages[:1]) == "<|im_start|>User:\nq one\n\nAssistant:\n"
    system = [{"role": "system", "content": "Be brief."}, *example.messages[:2]]
    assert render_prompt(tokenizer, system).startswith("<|im_start|>Be brief.\n\nUser:\nq one")


def test_plain_template_without_a_bos_token(tokenizer):
    tokenizer.chat_template, tokenizer.bos_token = None, None
    apply_template_choice(tokenizer, None)
    assert render_prompt(tokenizer, conversation("q").messages) == "User:\nq\n\nAssistant:\n"


def test_alpaca_template_for_models_without_one(tokenizer):
    tokenizer.chat_template = None
    assert apply_template_choice(tokenizer, "alpaca") == "alpaca"
    example = conversation("Name three colours.", "Red, green and blue.")
    [tokenized] = tokenize_examples(tokenizer, [example], max_length=512)
    assert _trained_text(tokenizer, tokenized) == "Red, green and blue.<|im_end|>"
    prompt = render_prompt(tokenizer, example.messages)
    assert prompt.startswith("Below is an instruction")
    assert prompt.endswith("### Instruction:\nName three colours.\n\n### Response:\n")


def test_template_from_file_and_unknown_name(tokenizer, tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text(NAMED_TEMPLATES["chatml"])
    assert apply_template_choice(tokenizer, str(path)) == str(path)
    assert tokenizer.chat_template == NAMED_TEMPLATES["chatml"]
    with pytest.raises(UserError, match="neither a known template"):
        apply_template_choice(tokenizer, "vicuna-v9")


def test_template_that_rewrites_history_is_refused(tokenizer):
    # Renders earlier turns differently once a later turn exists (as thinking-stripping templates do).
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}[{{ m['content'] }}]{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(UserError, match="--train-on all"):
        tokenize_examples(tokenizer, [conversation("q", "a")], max_length=512)


def test_warns_when_turns_do_not_end_with_eos(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.warns(UserWarning, match="does not end assistant turns with the EOS token"):
        tokenize_examples(tokenizer, [conversation("q", "a")], max_length=512)


def test_history_rewriting_template_still_trains_on_everything(tokenizer):
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}{{ m['content'] }}{% else %}[{{ m['content'] }}]{% endif %}"
        "{% endfor %}"
    )
    [tokenized] = tokenize_examples(tokenizer, [conversation("q", "a")], max_length=512, train_on="all")
    assert tokenizer.decode(tokenized.input_ids) == "[q]a"


def test_template_errors_name_the_example(tokenizer):
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(UserError, match="example ex: the chat template cannot render it: roles must alternate"):
        tokenize_examples(tokenizer, [conversation("q", "a")], max_length=512)


def test_the_next_turn_header_ends_a_response_of_a_named_template(tokenizer):
    from tunescope.data.templates import stop_strings
    from tunescope.decoding import Generated, cut_at_stop_string

    assert stop_strings("plain") == ["\nUser:\n", "\nAssistant:\n"] and stop_strings(None) == []
    answer = tokenizer("Paris is the capital.", add_special_tokens=False)["input_ids"]
    rambling = answer + tokenizer("\n\nAssistant:\nParis is", add_special_tokens=False)["input_ids"]
    cut = cut_at_stop_string(Generated(rambling, "length"), tokenizer, stop_strings("plain"))
    assert cut.finish_reason == "stop"
    assert tokenizer.decode(cut.token_ids).rstrip("\n") == "Paris is the capital."
    untouched = Generated(answer, "length")
    assert cut_at_stop_string(untouched, tokenizer, stop_strings("plain")) is untouched
