"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random Llama models, built in-process.

Nothing here touches a model hub or an asset package; the whole default test tier runs from these.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Any accidental hub access fails immediately instead of hanging on a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Name three colours. Red, green and blue are three colours.",
    "How many legs does a spider have? A spider has eight legs.",
    "Write a haiku about rain. Soft rain on the roof, the garden drinks in silence, clouds drift far away.",
    "Explain photosynthesis briefly. Plants turn light, water and carbon dioxide into sugar and oxygen.",
    "user assistant system Below is an instruction that describes a task. ### Instruction: ### Response:",
] * 4

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Name three colours.", "Red, green and blue."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Write a haiku about rain.", "Soft rain on the roof, the garden drinks in silence."),
    ("Explain photosynthesis briefly.", "Plants turn light and water into sugar."),
    ("What colour is the sky?", "The sky is blue on a clear day."),
    ("Is a tomato a fruit?", "Yes, botanically a tomato is a fruit."),
    ("Say hello.", "Hello there, how are you?"),
]


def build_tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on CORPUS, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_tiny_llama(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A randomly initialised LlamaForCausalLM sized for tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        # Larger than Llama's 0.02 so that logits can become confident without the embeddings
        # changing, as in a real pretrained model (LoRA does not train the embeddings).
        initializer_range=0.2,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session", autouse=True)
def _private_reply_cache(tmp_path_factory):
    """Judge and simplify replies cached in this session's own directory, not the user's cache.

    Replies cached by an earlier session (or by another checkout with another cache layout) must not
    decide what a test sees.
    """
    import tunescope.llm.cache

    directory = tmp_path_factory.mktemp("reply-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tunescope.llm.cache, "default_cache_dir", lambda: directory)
        yield directory


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny model directory (safetensors + tokenizer), loadable by path like any HF model."""
    out = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(tiny_tokenizer).save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """Like ``tiny_model_dir``, but its tokenizer has no chat template, as a pretrained-only base."""
    import copy

    out = tmp_path_factory.mktemp("tiny-base")
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    build_tiny_llama(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_in_format(data_format: str) -> list[dict]:
    """PAIRS written in one of the four supported shapes."""
    rows = []
    for index, (question, answer) in enumerate(PAIRS):
        if data_format == "alpaca":
            rows.append({"instruction": question, "input": "", "output": answer})
        elif data_format == "sharegpt":
            rows.append({"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]})
        elif data_format == "messages":
            rows.append(
                {
                    "id": f"ex-{index}",
                    "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                }
            )
        else:
            rows.append({"prompt": question, "completion": answer})
    return rows


@pytest.fixture
def messages_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", rows_in_format("messages"))


def cli_run(capsys, *argv) -> tuple[int, list[str]]:
    """Run ``tunescope ARGV`` in-process: its exit code and its stderr lines other than warnings."""
    from tunescope.cli import main

    code = main([str(arg) for arg in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]


def assert_one_line(code: int, err: list[str], *fragments: str) -> None:
    """Exit code 2 and exactly one error line, containing every fragment."""
    assert code == 2 and len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], err[0]
