"""Training throughput: tunescope's `train` against a plain TRL SFTTrainer script, in one run.

Both train the same model on the same examples with the same settings (LoRA or full, batch,
gradient accumulation, sequence length, fp32, no gradient checkpointing, one epoch). Two clocks:
the training loop alone (``trainer.train()``), and the whole job (load the model, prepare the
data, train, save, and for tunescope also the metrics log, plot and provenance). Throughput is the
number of non-padding tokens in the epoch divided by the time. Runs alternate in A B B A order so
that drift in the machine's speed affects both alike, after one uncounted warm-up round; medians
are reported, with their ratio.

    python benchmarks/bench_train.py [--method lora|full] [--examples 64] [--repeats 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tunescope.data import load_examples
from tunescope.models import load_model, load_tokenizer
from tunescope.train import TrainConfig, train
from tunescope.train.pipeline import _peft_config, prepare_training_data


def settings(args: argparse.Namespace, out: Path) -> TrainConfig:
    return TrainConfig(
        model=args.model, data=args.data, subset_size=args.examples, max_length=args.max_length,
        method=args.method, epochs=1, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
        warmup_ratio=0.0, precision="fp32", save_steps=10_000, out=str(out),
    )  # fmt: skip


def run_tunescope(args: argparse.Namespace, workdir: Path) -> tuple[float, float]:
    """Return (training-loop seconds, whole-job seconds)."""
    out = workdir / "tunescope"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = train(settings(args, out))
    return result.summary["runtime_s"], time.perf_counter() - started


def run_plain_trl(args: argparse.Namespace, workdir: Path) -> tuple[float, float]:
    """What a user would write with TRL directly: conversational prompt/completion data."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    out = workdir / "trl"
    shutil.rmtree(out, ignore_errors=True)
    config = settings(args, out)
    started = time.perf_counter()
    examples = load_examples(config).examples
    dataset = datasets.Dataset.from_list(
        [{"prompt": ex.messages[:-1], "completion": ex.messages[-1:]} for ex in examples]
    )
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(out), num_train_epochs=1, learning_rate=config.effective_learning_rate,
            lr_scheduler_type="cosine", warmup_steps=0.0, per_device_train_batch_size=args.micro_batch_size,
            gradient_accumulation_steps=args.batch_size // args.micro_batch_size, gradient_checkpointing=False,
            bf16=False, optim="adamw_torch", seed=42, max_length=args.max_length, logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_peft_config(config) if args.method == "lora" else None,
    )  # fmt: skip
    loop_started = time.perf_counter()
    trainer.train()
    loop = time.perf_counter() - loop_started
    trainer.save_model(str(out / "final"))
    return loop, time.perf_counter() - started


def epoch_tokens(args: argparse.Namespace) -> int:
    config = settings(args, Path("unused"))
    data = prepare_training_data(config, load_tokenizer(args.model))
    return sum(len(example.input_ids) for example in data.examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default="chitchat")
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    tokens = epoch_tokens(args)
    runners = {"tunescope": run_tunescope, "trl": run_plain_trl}
    loops: dict[str, list[float]] = {name: [] for name in runners}
    jobs: dict[str, list[float]] = {name: [] for name in runners}
    with tempfile.TemporaryDirectory() as tmp:
        # Round 0 warms up (first-use kernel selection, page cache) and is not counted.
        for repeat in range(args.repeats + 1):
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
            for name in order:
                loop, job = runners[name](args, Path(tmp))
                if repeat:
                    loops[name].append(round(loop, 2))
                    jobs[name].append(round(job, 2))

    def throughput(times: dict[str, list[float]]) -> dict[str, float]:
        return {name: round(tokens / statistics.median(values), 1) for name, values in times.items()}

    loop_rate, job_rate = throughput(loops), throughput(jobs)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}",
        "settings": vars(args),
        "epoch_tokens": tokens,
        "training_loop_s": loops,
        "whole_job_s": jobs,
        "training_loop_tokens_per_s": loop_rate,
        "whole_job_tokens_per_s": job_rate,
        "ratio_training_loop": round(loop_rate["tunescope"] / loop_rate["trl"], 3),
        "ratio_whole_job": round(job_rate["tunescope"] / job_rate["trl"], 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
