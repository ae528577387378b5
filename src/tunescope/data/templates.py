"""Render conversations with a chat template and mark which tokens the loss is computed on.

The mask is found in character space: each assistant turn's text is located by rendering the
conversation up to that turn, and a token is trained on when it *starts* inside such a span. This
works for any template that renders a conversation's prefix as a prefix of the whole, which is
what TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunescope.errors import UserError

IGNORE_INDEX = -100
"""Label value the loss skips (PyTorch's ``cross_entropy`` default)."""

TrainOn = Literal["assistant", "all"]

# Named templates for models that ship none (base checkpoints). In plain and alpaca the user turn
# already ends with the response header, so a prompt renders the same with or without a generation
# prompt, and an assistant turn ends with the tokenizer's EOS token, so generation stops where
# training ended. Alpaca is the paper's likely format (Stanford Alpaca / LLaMA-Factory). Plain is the
# default for a tokenizer without a template: a bare transcript, opened with the BOS token because
# tunescope tokenizes rendered text without adding special tokens and base models such as Gemma
# expect one.
NAMED_TEMPLATES = {
    "plain": (
        "{{- bos_token if bos_token else '' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] != 'assistant' and not loop.first -%}{{ '\\n\\n' }}{%- endif -%}"
        "{%- if message['role'] == 'system' -%}{{ message['content'] }}"
        "{%- elif message['role'] == 'user' -%}{{ 'User:\\n' + message['content'] + '\\n\\nAssistant:\\n' }}"
        "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}"
        "{%- endif -%}{%- endfor -%}"
    ),
    "alpaca": (
        "{%- if messages[0]['role'] == 'system' -%}{{ messages[0]['content'] + '\\n\\n' }}"
        "{%- else -%}{{ 'Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\\n\\n' }}{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- if not loop.first and not (loop.index0 == 1 and messages[0]['role'] == 'system') -%}"
        "{{ '\\n\\n' }}{%- endif -%}"
        "{{ '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
        "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}"
        "{%- endif -%}{%- endfor -%}"
    ),
    "chatml": (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    ),
}
DEFAULT_TEMPLATE = "plain"
"""The template installed on a tokenizer that has none when no template is chosen."""

# A base model that has never seen an end-of-turn token goes on writing the transcript: it asks the
# next question itself or repeats its prompt under a new response header. For the named templates
# that have no turn-closing token of their own, the next turn's header ends a response, as the stop
# words of LLaMA-Factory's templates and the ``stop`` of OpenAI-compatible servers do.
TEMPLATE_STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "plain": ("\nUser:\n", "\nAssistant:\n"),
    "alpaca": ("\n### Instruction:\n", "\n### Response:\n"),
}
"""Text that ends a response generated with a named template (the headers of the next turn)."""


def stop_strings(template: str | None) -> list[str]:
    """The stop strings of a template as :func:`apply_template_choice` names it (none for a model's own)."""
    return list(TEMPLATE_STOP_STRINGS.get(template or "", ()))


def apply_template_choice(tokenizer: Any, template: str | None) -> str | None:
    """Install the chosen chat template on ``tokenizer`` and say which one is in use.

    Args:
        tokenizer: A Hugging Face tokenizer; changed in place.
        template: ``None`` keeps the tokenizer's own template, or installs ``DEFAULT_TEMPLATE`` when
            it has none; a name from ``NAMED_TEMPLATES`` or a path to a Jinja file replaces it.

    Returns:
        What outputs record as the template: the name or path in use; for the tokenizer's own, the
        name of the named template it is (a model tuned by tunescope saves the one it was trained
        with), else ``None``.

    Raises:
        UserError: when the template file cannot be read.
    """
    own = getattr(tokenizer, "chat_template", None)
    if template is None and own:
        return next((name for name, text in NAMED_TEMPLATES.items() if text == own), None)
    if template is None:
        template = DEFAULT_TEMPLATE
    if template in NAMED_TEMPLATES:
        tokenizer.chat_template = NAMED_TEMPLATES[template]
    elif template is not None:
        path = Path(template)
        if not path.is_file():
            raise UserError(
                f"--template {template}: neither a known template ({', '.join(NAMED_TEMPLATES)}) nor a file"
            )
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    return template


def render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """Render ``messages`` to text with the tokenizer's chat template."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Render the conversation up to (not including) a final assistant turn, ready for generation."""
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return render(tokenizer, messages, add_generation_prompt=True)


def _render_example(tokenizer: Any, messages: list[dict[str, str]], example_id: str, **kwargs: Any) -> str:
    try:
        return render(tokenizer, messages, **kwargs)
    except Exception as err:  # jinja2 errors, including a template's own raise_exception()
        raise UserError(f"example {example_id}: the chat template cannot render it: {err}") from None


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], example_id: str) -> tuple[str, list[range]]:
    """Return the rendered conversation and the character ranges of its assistant turns.

    Each range runs from the end of the generation prompt to the end of the rendered turn, so it
    includes the template's end-of-turn token: the model learns to stop.

    Raises:
        UserError: when the template cannot render the conversation, or renders a prefix of the
            conversation differently from the start of the whole (then the mask is undefined).
    """
    text = _render_example(tokenizer, messages, example_id)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render_example(tokenizer, messages[:index], example_id, add_generation_prompt=True) if index else ""
        through = _render_example(tokenizer, messages[: index + 1], example_id)
        if not (text.startswith(before) and text.startswith(through)):
            raise UserError(
                f"example {example_id}: the chat template renders a conversation's beginning differently "
                "from the whole conversation, so assistant tokens cannot be located; "
                "use --train-on all or another --template"
            )
        spans.append(range(len(before), len(through)))
    return text, spans


@dataclass(frozen=True)
class TokenizedExample:
    """One training sequence: token ids and labels, ``IGNORE_INDEX`` where no loss is taken."""

    example_id: str
    """The example's ``id`` field, or its 0-based row number."""
    input_ids: list[int]
    """Token ids of the rendered conversation, truncated to the maximum length."""
    labels: list[int]
    """``input_ids`` with untrained positions replaced by ``IGNORE_INDEX``."""
    full_length: int
    """Number of tokens before truncation."""

    @property
    def trained_tokens(self) -> int:
        """Number of positions that contribute to the loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_examples(
    tokenizer: Any,
    examples: list[Any],
    *,
    max_length: int,
    train_on: TrainOn = "assistant",
    batch_size: int = 512,
) -> list[TokenizedExample]:
    """Render, tokenize, mask and truncate ``examples`` (objects with ``id`` and ``messages``).

    Sequences longer than ``max_length`` keep their first ``max_length`` tokens, as in TRL.
    """
    out: list[TokenizedExample] = []
    eos_checked = False
    for first in range(0, len(examples), batch_size):
        batch = examples[first : first + batch_size]
        rendered = [
            assistant_spans(tokenizer, example.messages, example.id)
            if train_on == "assistant"
            else (_render_example(tokenizer, example.messages, example.id), [])
            for example in batch
        ]
        encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        for example, (text, spans), ids, offsets in zip(
            batch, rendered, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            if train_on == "all":
                labels = list(ids)
            else:
                labels = [
                    token if any(start in span for span in spans) else IGNORE_INDEX
                    for token, (start, _) in zip(ids, offsets, strict=True)
                ]
            if not eos_checked and spans:
                eos_checked = True
                _warn_if_turns_do_not_end_with_eos(tokenizer, text, spans[-1])
            out.append(TokenizedExample(example.id, ids[:max_length], labels[:max_length], len(ids)))
    return out


def tokenize_documents(
    tokenizer: Any, documents: list[Any], *, max_length: int, batch_size: int = 512
) -> list[TokenizedExample]:
    """Tokenize documents (objects with ``id`` and ``text``) for continued pre-training: loss on every token.

    Each document is encoded with the tokenizer's own special tokens (a BOS where the model expects
    one) and ends with the EOS token, so the model learns where documents end. A document longer than
    ``max_length`` is cut into consecutive pieces of at most ``max_length`` tokens, none dropped (ids
    ``<id>#<piece>``); a final piece of a single token, which predicts nothing, is left out.
    """
    eos = tokenizer.eos_token_id
    out: list[TokenizedExample] = []
    for first in range(0, len(documents), batch_size):
        batch = documents[first : first + batch_size]
        encoded = tokenizer([document.text for document in batch], add_special_tokens=True)["input_ids"]
        for document, ids in zip(batch, encoded, strict=True):
            ids = [*ids, eos] if eos is not None and (not ids or ids[-1] != eos) else list(ids)
            pieces = [ids[start : start + max_length] for start in range(0, len(ids), max_length)]
            pieces = [piece for piece in pieces if len(piece) > 1]
            for number, piece in enumerate(pieces):
                piece_id = document.id if len(pieces) == 1 else f"{document.id}#{number}"
                out.append(TokenizedExample(piece_id, piece, list(piece), len(ids)))
    return out


def _warn_if_turns_do_not_end_with_eos(tokenizer: Any, text: str, span: range) -> None:
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in text[span.start : span.stop]:
        warnings.warn(
            f"the chat template does not end assistant turns with the EOS token {eos!r}; "
            "generation may not stop where training ended",
            stacklevel=3,
        )
