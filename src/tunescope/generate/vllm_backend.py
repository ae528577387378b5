"""Optional vLLM backend for `tunescope generate`: the same records, from vLLM's engine.

At paper scale generation dominates the cost (every model answers every prompt, up to 2,048
tokens each), and vLLM's paged KV cache and continuous batching decode many times faster than
``model.generate`` on a GPU. vLLM is not a dependency: it is imported only when ``--backend vllm``
is asked for, and asking for it without it installed is a one-line error.

vLLM reads the same prompt token ids (never re-tokenized text), and its output ids are recorded
exactly as the transformers path records them: up to and including the stop token, with
``finish_reason`` 'stop' or 'length'. Greedy decoding is temperature 0. The two engines use
different kernels, so on rare near-ties greedy outputs can differ by a token; `tunescope shift`
reports how many response tokens are the tuned model's own argmax, which shows it.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunescope.decoding import Generated
from tunescope.errors import UserError
from tunescope.models import ModelSource, load_model, load_tokenizer

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def vllm_available() -> bool:
    """Whether the ``vllm`` package can be imported here."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Refuse ``--backend vllm`` where vLLM is not installed.

    Raises:
        UserError: with what to install, or to use the default backend.
    """
    if not vllm_available():
        raise UserError(
            "--backend vllm: vLLM is not installed here (pip install vllm, on Linux with a CUDA GPU); "
            "the default --backend hf needs nothing more"
        )


def finished_output(
    token_ids: Sequence[int],
    finish_reason: str | None,
    stop_reason: int | str | None,
    stop_ids: Sequence[int],
    eos_id: int | None,
) -> tuple[list[int], str]:
    """A vLLM completion as tunescope records it: ids up to and including the stop token, and why it ended.

    vLLM versions differ in whether ``token_ids`` keep the stop token; when it was left out,
    ``stop_reason`` names it (an id), or is None for the end-of-sequence token ``eos_id``.
    """
    ids = list(token_ids)
    stop = next((i for i, token in enumerate(ids) if token in stop_ids), None)
    if stop is not None:
        return ids[: stop + 1], "stop"
    if finish_reason == "stop":
        ended_by = stop_reason if isinstance(stop_reason, int) else eos_id if eos_id is not None else stop_ids[0]
        return [*ids, ended_by], "stop"
    return ids, "length"


class VLLMGenerator:
    """A vLLM engine over the model ``generate`` was asked for, decoding batches of token ids."""

    def __init__(
        self, source: ModelSource, precision: str, *, tensor_parallel_size: int, seed: int, merge_adapter: bool
    ) -> None:
        """Start the engine; a LoRA adapter is merged into a temporary copy of its base, or served as LoRA.

        Raises:
            UserError: when vLLM is not installed.
        """
        require_vllm()
        from vllm import LLM

        self._lora = None
        self._merged: tempfile.TemporaryDirectory | None = None
        location = source.location
        options: dict[str, Any] = {}
        if source.kind == "adapter" and source.base is not None:
            if merge_adapter:
                self._merged = tempfile.TemporaryDirectory(prefix="tunescope-vllm-")
                _merge_adapter(source, Path(self._merged.name), precision)
                location = self._merged.name
            else:
                from vllm.lora.request import LoRARequest

                location = source.base.location
                self._lora = LoRARequest("adapter", 1, source.location)
                options = {"enable_lora": True, "max_lora_rank": _adapter_rank(source)}
        self.llm = LLM(
            model=location, dtype=DTYPES[precision], tensor_parallel_size=tensor_parallel_size, seed=seed, **options
        )

    def generate(
        self, prompts: list[list[int]], decoding: dict[str, Any], stop_ids: list[int], eos_id: int | None
    ) -> list[Any]:
        """Decode ``prompts`` (token ids) with ``decoding`` (see ``GenerateConfig.decoding``); one result each."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sampling = decoding["do_sample"]
        params = SamplingParams(
            max_tokens=decoding["max_new_tokens"],
            temperature=decoding["temperature"] if sampling else 0.0,  # 0: greedy
            top_p=decoding["top_p"] if sampling else 1.0,
            top_k=(decoding["top_k"] or -1) if sampling else -1,  # -1: no top-k cut
            seed=decoding.get("seed"),
            repetition_penalty=decoding["repetition_penalty"],
            stop_token_ids=stop_ids,
            detokenize=False,  # the text is decoded from the ids, as for the transformers backend
        )
        requests = [TokensPrompt(prompt_token_ids=prompt) for prompt in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False, lora_request=self._lora)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            ids, reason = finished_output(
                completion.token_ids,
                completion.finish_reason,
                getattr(completion, "stop_reason", None),
                stop_ids,
                eos_id,
            )
            results.append(Generated(ids, reason))
        return results

    def close(self) -> None:
        """Drop the engine and any merged copy of the weights."""
        self.llm = None
        if self._merged is not None:
            self._merged.cleanup()


def _adapter_rank(source: ModelSource) -> int:
    import json

    return int(json.loads((Path(source.location) / "adapter_config.json").read_text(encoding="utf-8"))["r"])


def _merge_adapter(source: ModelSource, out: Path, precision: str) -> None:
    """Write the base with the adapter merged in (safetensors) and the tokenizer to ``out``, for vLLM to load."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    merged = load_model(source, dtype=dtype).merge_and_unload()
    merged.save_pretrained(out)
    load_tokenizer(source).save_pretrained(out)
