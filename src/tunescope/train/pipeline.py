"""`tunescope train`: LoRA or full fine-tuning through TRL's SFTTrainer, crash-safe and resumable.

The pipeline is: claim the run directory -> load and tokenize the data (fail fast, before the
model is loaded) -> load the model -> wrap it with LoRA or leave it whole -> train, logging every
step to ``metrics.jsonl`` and checkpointing for ``--resume`` -> write the final adapter or model
under a temporary name and rename it -> plot the loss -> write ``run.json`` last.

Text data (``--format text``) is continued pre-training: documents cut to ``max_length``, every token
trained, packed into rows of ``max_length`` by TRL's best-fit-decreasing packing. A run can start from
another run (``--model runs/cpt``): a full run's model is tuned further; a LoRA run's adapter is first
merged into its base, and a new LoRA run keeps that merged model beside its adapter (``merged-parent/``)
as the adapter's base, so everything downstream sees one ordinary adapter. ``provenance.json`` records
the chain of runs (``lineage``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunescope.config import config_to_dict
from tunescope.data import (
    IGNORE_INDEX,
    DataSettings,
    LoadedData,
    TokenizedExample,
    load_examples,
    nested_subset,
    render_prompt,
    tokenize_documents,
    tokenize_examples,
)
from tunescope.data.templates import apply_template_choice
from tunescope.distributed import broadcast, process_state
from tunescope.env import device_info, git_commit, package_versions
from tunescope.errors import UserError
from tunescope.files import atomic_path, write_json
from tunescope.locks import output_lock
from tunescope.models import MERGED_PARENT, ModelSource, load_model, load_tokenizer, resolve_model
from tunescope.paths import recorded_model, recorded_path
from tunescope.rundir import (
    DONE_FILE,
    PROVENANCE_FILE,
    RunState,
    check_run_dir,
    lineage_entry,
    recorded_lineage,
    run_directory,
    run_lineage,
    start_run_dir,
)
from tunescope.train.checkpoint import latest_checkpoint
from tunescope.train.config import TrainConfig, shared_learning_rate_warning

PACKING_STRATEGY = "bfd"
"""TRL's packing of text pieces into rows: best-fit decreasing, which keeps each piece whole (the pieces are
already cut to max_length), and attention stays within each piece through its position ids."""

# Settings that may change when a run is resumed without changing its result.
# The two speed settings change only rounding, and runs from before they existed lack them.
RESUMABLE_CHANGES = frozenset(
    {
        "out", "save_steps", "save_total_limit", "keep_checkpoints", "report_to", "monitor_every", "monitor_examples",
        "monitor_tokens", "logits_at_labels_only", "padding_free",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TrainingData:
    """Tokenized training examples and what happened on the way."""

    loaded: LoadedData
    """The examples before tokenization."""
    examples: list[TokenizedExample]
    """Examples with at least one trained token, in subset order."""
    n_truncated: int
    """Examples cut at max_length (kept)."""
    n_too_long: int
    """Examples dropped because truncation left no trained token."""
    template: str | None
    """The chat template the examples were rendered with: None for the tokenizer's own, else its name or path."""

    @property
    def packed(self) -> bool:
        """Whether this is text data (continued pre-training), packed into rows of max_length."""
        return self.loaded.format == "text"


@dataclass(frozen=True)
class TrainResult:
    """Where a finished run's outputs are."""

    run_dir: Path
    """The run directory."""
    artifact: Path
    """The adapter (LoRA) or model (full) directory."""
    metrics: Path
    """Per-step metrics, one JSON object per line."""
    loss_plot: Path
    """The training-loss curve."""
    summary: dict[str, Any]
    """Contents of run.json."""


def prepare_training_data(config: TrainConfig, tokenizer: Any, loaded: LoadedData | None = None) -> TrainingData:
    """Load (unless ``loaded`` is given), render, mask and truncate the training data.

    Raises:
        UserError: when the data is unusable, including when max_length leaves no example with a
            trained token.
    """
    loaded = loaded or load_examples(config)
    if loaded.format == "text":
        pieces = tokenize_documents(tokenizer, loaded.examples, max_length=config.max_length)
        if not pieces:
            raise UserError(f"{loaded.source}: no document is long enough to train on (two tokens or more)")
        split = len({piece.example_id.rsplit("#", 1)[0] for piece in pieces if piece.full_length > config.max_length})
        return TrainingData(loaded, pieces, split, 0, None)
    template = apply_template_choice(tokenizer, config.template)
    tokenized = tokenize_examples(tokenizer, loaded.examples, max_length=config.max_length, train_on=config.train_on)
    usable = [example for example in tokenized if example.trained_tokens > 0]
    if not usable:
        shortest = min(_prompt_length(example) for example in tokenized)
        raise UserError(
            f"--max-length {config.max_length} is too small for any example of {loaded.source}: "
            f"the shortest prompt alone is {shortest} tokens"
        )
    n_truncated = sum(example.full_length > config.max_length for example in tokenized)
    return TrainingData(loaded, usable, n_truncated, len(tokenized) - len(usable), template)


def _prompt_length(example: TokenizedExample) -> int:
    return next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), example.full_length)


def length_statistics(data: TrainingData) -> dict[str, Any]:
    """Token-count summary of the training set, as the dry run prints and provenance records."""

    def summary(values: list[int]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "min": ordered[0],
            "median": statistics.median(ordered),
            "mean": round(statistics.fmean(ordered), 1),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1],
        }

    tokens = {
        "tokens": summary([len(example.input_ids) for example in data.examples]),
        "trained_tokens": summary([example.trained_tokens for example in data.examples]),
    }
    if data.packed:
        return {
            "records": data.loaded.n_records,
            "empty_documents": data.loaded.n_without_response,
            "documents": len(data.loaded.examples),
            "pieces": len(data.examples),
            "documents_split": data.n_truncated,
            **tokens,
        }
    return {
        "records": data.loaded.n_records,
        "without_response": data.loaded.n_without_response,
        "selected": len(data.loaded.examples),
        "used": len(data.examples),
        "truncated": data.n_truncated,
        "dropped_too_long": data.n_too_long,
        **tokens,
    }


def render_masked(tokenizer: Any, example: TokenizedExample, open_mark: str = "[", close_mark: str = "]") -> str:
    """The example's text with the parts that carry no loss wrapped in marks."""
    pieces, run, run_trained = [], [], None
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != IGNORE_INDEX
        if run and trained != run_trained:
            pieces.append((run_trained, tokenizer.decode(run)))
            run = []
        run.append(token)
        run_trained = trained
    if run:
        pieces.append((run_trained, tokenizer.decode(run)))
    return "".join(text if trained else f"{open_mark}{text}{close_mark}" for trained, text in pieces)


def dry_run(config: TrainConfig, n_examples: int = 3) -> str:
    """Describe what training would see: three rendered examples with masks, and length statistics."""
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    data = prepare_training_data(config, tokenizer)
    stats = length_statistics(data)
    if data.packed:
        lines = [
            f"data: {data.loaded.source} (format text, {stats['documents']} documents in {stats['pieces']} pieces of "
            f"at most {config.max_length} tokens, every token trained, packed into rows of {config.max_length})"
        ]
    else:
        lines = [
            f"data: {data.loaded.source} (format {data.loaded.format}, {stats['used']} examples used, "
            f"template {data.template or 'of the tokenizer'})",
            "text in ⟦ ⟧ carries no loss; the rest is trained on",
        ]
    for number, example in enumerate(data.examples[:n_examples], start=1):
        lines += [
            f"--- example {number} (id {example.example_id}, {len(example.input_ids)} tokens, "
            f"{example.trained_tokens} trained) ---",
            render_masked(tokenizer, example, "⟦", "⟧"),
        ]
    rows = _packed_rows(data, config.max_length) if data.packed else len(data.examples)
    steps = -(-rows // config.effective_batch_size)
    lines += ["--- statistics ---", *(f"{key}: {value}" for key, value in stats.items())]
    if data.packed:
        lines.append(f"packed rows: {rows}")
    lines.append(f"optimizer steps: {steps} per epoch, {config.max_steps or int(steps * config.epochs)} in all")
    return "\n".join(lines)


def _training_rows(data: TrainingData) -> Any:
    """The tokenized examples as the dataset the trainer reads."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "input_ids": [example.input_ids for example in data.examples],
            "labels": [example.labels for example in data.examples],
        }
    )


def _packed_rows(data: TrainingData, max_length: int) -> int:
    """Rows TRL's best-fit-decreasing packing makes of the pieces (what a text run's batches count)."""
    from trl import pack_dataset

    return len(pack_dataset(_training_rows(data), max_length, PACKING_STRATEGY))


def _use_bf16(config: TrainConfig) -> bool:
    import torch

    if config.precision == "fp32":
        return False
    if config.precision == "bf16":
        return True
    # Without AVX512_BF16 or AMX, CPU bf16 matrix products are emulated: several times slower than fp32.
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _gradient_accumulation(config: TrainConfig) -> int:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = config.micro_batch_size * world_size
    if config.effective_batch_size % per_step:
        raise UserError(
            f"--effective-batch-size {config.effective_batch_size} is not a multiple of micro_batch_size x "
            "processes "
            f"({config.micro_batch_size} x {world_size})"
        )
    return config.effective_batch_size // per_step


def parameter_sharding() -> str | None:
    """The launcher's parameter sharding (FSDP or DeepSpeed ZeRO-3) for this run, if any.

    ``accelerate launch`` announces its engine through environment variables; a DeepSpeed JSON file
    may set the ZeRO stage instead.
    """
    import json

    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return "FSDP"
    if not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return None
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if config_file and config_file != "none" and Path(config_file).is_file():
        stage = str(json.loads(Path(config_file).read_text(encoding="utf-8")).get("zero_optimization", {}).get("stage"))
    return "DeepSpeed ZeRO-3" if stage == "3" else None


def _check_monitor_supported(config: TrainConfig) -> None:
    """Refuse the live shift monitor where the parameters are sharded across processes.

    The monitor runs forward passes on the main process alone; with FSDP or ZeRO-3 every forward
    pass gathers parameters from all processes, so the main process would wait for ever.

    Raises:
        UserError: naming the engine and what to do instead.
    """
    if config.monitor_every and (sharding := parameter_sharding()):
        raise UserError(
            f"--monitor-every: the live shift monitor needs the whole model on one process, but {sharding} "
            "shards it across processes; train without the monitor (--monitor-every 0) and run `tunescope "
            "shift` on the result, or use DDP / ZeRO-2"
        )


def _peft_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        bias="none",  # keeps disable_adapter() an exact view of the base model for the shift analysis
        task_type="CAUSAL_LM",
    )


def _provenance(
    config: TrainConfig,
    source: ModelSource,
    data: TrainingData,
    trainer: Any,
    processes: dict[str, Any],
    lineage: list[dict[str, Any]],
) -> dict[str, Any]:
    def count(parameter: Any) -> int:  # ZeRO-3 leaves an empty shard in place and keeps the size apart
        return getattr(parameter, "ds_numel", parameter.numel())

    trainable = sum(count(p) for p in trainer.model.parameters() if p.requires_grad)
    total = sum(count(p) for p in trainer.model.parameters())
    run_dir = Path(config.out).expanduser()  # paths are recorded relative to it (tunescope.paths)
    return {
        "command": "train",
        "argv": sys.argv,
        "model": recorded_model(source.describe(), run_dir),
        "data": {
            "source": recorded_path(data.loaded.source, run_dir),
            "format": data.loaded.format,
            "template": data.template,
            "sha256": data.loaded.fingerprint,
            "subset_size": config.subset_size,
            "subset_seed": config.subset_seed,
            "statistics": length_statistics(data),
        },
        "seed": config.seed,
        "learning_rate": config.effective_learning_rate,
        "precision": "bf16" if _use_bf16(config) else "fp32",
        # What the run did, which for the output layer can differ from what was asked (a model whose
        # logits are scaled keeps TRL's path).
        "loss_path": {
            "logits_at_labels_only": trainer.logits_at_labels_only,
            "batching": (
                f"packed to {config.max_length} tokens ({PACKING_STRATEGY}), padding-free"
                if data.packed
                else "padding-free"
                if config.padding_free
                else "padded per micro-batch"
            ),
        },
        "neftune_noise_alpha": config.neftune_noise_alpha,
        # The runs this one descends from, oldest first; empty when it started from a base model.
        "lineage": recorded_lineage(lineage, run_dir),
        "merged_parent": MERGED_PARENT if source.kind == "adapter" and config.method == "lora" else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "device": device_info(),
        "processes": processes,
    }


def _sft_arguments(config: TrainConfig, run_dir: Path, packed: bool) -> Any:
    import torch
    from trl import SFTConfig

    padding_free = config.padding_free or packed  # TRL's packing lays rows out padding-free
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.effective_learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of the steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=_gradient_accumulation(config),
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=_use_bf16(config),
        # One fused kernel for the whole update (Transformers' default with torch >= 2.8): on a CPU the
        # per-tensor loop took 0.71 s a step for Gemma-3-270M's 268M parameters, the fused one 0.11 s.
        optim="adamw_torch_fused",
        seed=config.seed,
        data_seed=config.seed,
        # The examples arrive truncated; TRL refuses a max_length it would not enforce in padding-free rows,
        # except as the row length of packing.
        max_length=config.max_length if packed or not padding_free else None,
        padding_free=padding_free,
        packing=packed,
        packing_strategy=PACKING_STRATEGY,
        logging_steps=1,
        logging_nan_inf_filter=False,  # otherwise the Trainer hides a NaN loss behind an average
        # Kept in checkpoints, so tokens/s survives a resume. A padding-free row has no padding, and counting
        # "non_padding" there would skip real EOS tokens wherever the pad token is the EOS token.
        include_num_input_tokens_seen="all" if padding_free else "non_padding",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=config.report_to or "none",
        disable_tqdm=True,  # replaced by ProgressBar / ProgressLines
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Every trainable parameter takes part in every step (decoder-only models, LoRA included), so DDP
        # need not walk the autograd graph after each backward pass looking for unused ones.
        ddp_find_unused_parameters=False,
    )


def _shift_monitor(config: TrainConfig, run_dir: Path, tokenizer: Any) -> Any:
    from tunescope.train.monitor import ShiftMonitor

    prompts = load_examples(DataSettings(data=config.monitor_prompts), require_response=False).examples
    chosen = nested_subset(prompts, min(config.monitor_examples, len(prompts)), config.subset_seed)
    ids = [tokenizer(render_prompt(tokenizer, ex.messages), add_special_tokens=False)["input_ids"] for ex in chosen]
    return ShiftMonitor(run_dir, tokenizer, ids, config.monitor_every, config.monitor_tokens)


def _build_trainer(
    config: TrainConfig, run_dir: Path, args: Any, model: Any, tokenizer: Any, data: TrainingData
) -> Any:
    from transformers import PrinterCallback, ProgressCallback

    from tunescope.train.callbacks import (
        MetricsLog,
        NoCheckpointAtTheEnd,
        ProgressBar,
        ProgressLines,
        StopOnNonFiniteLoss,
    )
    from tunescope.train.trainer import SafetensorsSFTTrainer

    monitor = _shift_monitor(config, run_dir, tokenizer) if config.monitor_every else None
    # The monitor measures before MetricsLog writes, so each step's line carries its measurement.
    callbacks = [StopOnNonFiniteLoss(), *([monitor] if monitor else []), MetricsLog(run_dir / "metrics.jsonl", monitor)]
    if not config.keep_checkpoints:
        callbacks.append(NoCheckpointAtTheEnd())

    # Already tokenized and masked, so TRL only batches and pads (and packs text pieces).
    trainer = SafetensorsSFTTrainer(
        model=model,
        args=args,
        train_dataset=_training_rows(data),
        processing_class=tokenizer,
        peft_config=_peft_config(config) if config.method == "lora" else None,
        callbacks=callbacks,
        logits_at_labels_only=config.logits_at_labels_only,
        neftune_noise_alpha=config.neftune_noise_alpha,
    )
    # The Trainer's own progress output prints raw log dicts; ours is a bar on a terminal and
    # occasional plain lines elsewhere.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressBar() if sys.stderr.isatty() else ProgressLines())
    return trainer


def parent_lineage(model: str) -> list[dict[str, Any]]:
    """The chain of runs a new run on ``model`` descends from, oldest first: empty unless ``model`` is a run."""
    parent = run_directory(model)
    return [*run_lineage(parent), lineage_entry(parent)] if parent else []


def _check_parent_supported(source: ModelSource) -> None:
    """Refuse to start from a LoRA adapter where parameters are sharded (the merge needs whole weights).

    Raises:
        UserError: naming the engine and what to do instead.
    """
    if source.kind == "adapter" and (sharding := parameter_sharding()):
        raise UserError(
            f"--model {source.spec}: starting from a LoRA run merges its adapter into the weights, which {sharding} "
            "shards across processes; train the first stage with --method full, or use DDP / ZeRO-2"
        )


def _keep_merged_parent(model: Any, tokenizer: Any, run_dir: Path, process: Any) -> None:
    """Save the merged starting model as the new adapter's base, beside it in the run directory.

    A second LoRA adapter is trained on the first one's merged weights, so those weights are its base;
    keeping them in the run makes the run load like any LoRA run, with no chain of adapters to replay.
    """
    target = run_dir / MERGED_PARENT
    if process.is_main_process and not (target / "config.json").is_file():
        with atomic_path(target) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
    # PEFT records the model's name as the adapter's base.
    model.name_or_path = str(target.resolve())
    model.config.name_or_path = str(target.resolve())


def _save_artifact(trainer: Any, tokenizer: Any, artifact: Path, process: Any) -> None:
    """Write the adapter or model under a temporary name and rename it into place.

    Every process takes part in ``save_model``: with ZeRO-3 or FSDP the full weights are gathered
    from all of them (the Trainer lets only the main process write). The temporary directory, the
    tokenizer and the rename are the main process's.
    """
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(artifact)) if process.is_main_process else None
        tmp = Path(broadcast(process, str(tmp) if tmp else ""))  # the same directory for every process
        trainer.save_model(str(tmp))
        process.wait_for_everyone()
        if process.is_main_process:
            tokenizer.save_pretrained(str(tmp))
            (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; nothing should read it


def _save_outputs(config: TrainConfig, trainer: Any, artifact: Path, summary: dict[str, Any]) -> None:
    """Plots and ``run.json`` (main process only), after the artifact is in place."""
    from tunescope.train.plot import plot_loss, plot_monitor

    run_dir = artifact.parent
    plot_loss(run_dir / "metrics.jsonl", run_dir / "loss.png", title=f"{config.method}: {config.model}")
    if config.monitor_every:
        plot_monitor(run_dir / "metrics.jsonl", run_dir / "monitor.png", title=f"{config.method}: shift from base")
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    summary = {
        "status": "complete",
        "method": config.method,
        "model": recorded_path(config.model, run_dir),
        "artifact": artifact.name,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        **summary,
    }
    write_json(run_dir / DONE_FILE, summary)  # last: its presence means the run is complete


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` with LoRA or fully, into ``config.out``.

    Args:
        config: Validated settings.
        resume: Continue the unfinished run in ``config.out`` from its last checkpoint, with the
            same data order, so the loss curve continues as if never interrupted.
        overwrite: Replace a run already in ``config.out``.

    Raises:
        UserError: for bad input (reported before the model is loaded where possible).
        OutputBusy: when another process is writing into ``config.out``.
        NonFiniteLoss: when the loss becomes NaN or infinite.
    """
    # Under `accelerate launch` every process runs this function. The Trainer shares the work out
    # (DDP, FSDP or DeepSpeed, as the launcher's config says); only the main process writes files.
    process = process_state()
    with output_lock(config.out, state=process):  # one run per directory, from its check to run.json
        return _train(config, process, resume=resume, overwrite=overwrite)


def _train(config: TrainConfig, process: Any, *, resume: bool, overwrite: bool) -> TrainResult:
    run_dir = Path(config.out).expanduser()
    artifact = run_dir / ("adapter" if config.method == "lora" else "model")
    resolved = config_to_dict(config)
    state = check_run_dir(
        run_dir, resolved, resume=resume, overwrite=overwrite, may_change_on_resume=RESUMABLE_CHANGES,
        settings_class=TrainConfig,
    )  # fmt: skip
    if state is RunState.DONE:
        return _result(run_dir, artifact)
    if (warning := shared_learning_rate_warning(config)) and process.is_main_process:
        warnings.warn(warning, stacklevel=2)

    # Everything that can reject the input runs before the run directory is touched, cheapest first.
    _check_monitor_supported(config)
    loaded = load_examples(config)
    source = resolve_model(config.model)
    _check_parent_supported(source)
    lineage = parent_lineage(config.model)
    tokenizer = load_tokenizer(source, trust_remote_code=config.trust_remote_code)
    data = prepare_training_data(config, tokenizer, loaded)
    _gradient_accumulation(config)  # rejects a batch size the processes cannot split, before loading
    # The arguments come before the model: under DeepSpeed ZeRO-3 they make from_pretrained load each
    # process's shard only, instead of the whole model on every process.
    args = _sft_arguments(config, run_dir, data.packed)
    model = load_model(source, trust_remote_code=config.trust_remote_code)
    if source.kind == "adapter":
        # The parent's LoRA update becomes part of the weights this run starts from; PEFT froze them, and
        # full fine-tuning trains them all (a new LoRA freezes them again).
        model = model.merge_and_unload().requires_grad_(True)
    process.wait_for_everyone()  # every process has judged the directory before it changes
    if state is RunState.NEW and process.is_main_process:
        start_run_dir(run_dir, resolved)
    if source.kind == "adapter" and config.method == "lora":
        _keep_merged_parent(model, tokenizer, run_dir, process)
    process.wait_for_everyone()  # ... and none reads or writes it before it is ready

    trainer = _build_trainer(config, run_dir, args, model, tokenizer, data)
    if state is RunState.NEW and process.is_main_process:
        processes = {"count": process.num_processes, "engine": str(trainer.accelerator.distributed_type)}
        write_json(run_dir / PROVENANCE_FILE, _provenance(config, source, data, trainer, processes, lineage))

    checkpoint = latest_checkpoint(run_dir / "checkpoints") if state is RunState.RESUME else None
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime = time.perf_counter() - started
    _save_artifact(trainer, tokenizer, artifact, process)
    if process.is_main_process:
        extra = {
            "examples": len(data.examples),
            "train_loss": output.training_loss,
            "runtime_s": round(runtime, 2),
            "resumed_from": checkpoint.name if checkpoint else None,
            "processes": process.num_processes,
        }
        _save_outputs(config, trainer, artifact, extra)
        if not config.keep_checkpoints:
            # Only after run.json: a run that crashes before it still resumes from its last checkpoint.
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    process.wait_for_everyone()
    return _result(run_dir, artifact)


def _result(run_dir: Path, artifact: Path) -> TrainResult:
    import json

    summary = json.loads((run_dir / DONE_FILE).read_text(encoding="utf-8"))
    return TrainResult(run_dir, artifact, run_dir / "metrics.jsonl", run_dir / "loss.png", summary)
