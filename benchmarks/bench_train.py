"""Training throughput and memory: tunescope's `train` against a plain TRL SFTTrainer script, in one run.

Both train the same model on the same examples with the same settings (LoRA or full, batch,
gradient accumulation, sequence length, template, fp32, no gradient checkpointing, one epoch). The
plain TRL script is what a user would write: conversational prompt/completion data, TRL's own
tokenization and its default batching (each micro-batch padded to its longest example); with
``trl-padding-free`` it also sets TRL's ``padding_free=True``. tunescope runs with its defaults
(the output layer at labelled positions only, padding-free micro-batches).

Every run is a fresh process, so each reports its own peak resident memory (VmHWM), and none
inherits another's allocator or caches. Two clocks: the training loop alone (``trainer.train()``),
and the whole job (load the model, prepare the data, train, save, and for tunescope also the
metrics log, plot and provenance). Throughput is the number of non-padding tokens in the epoch
divided by the time. The loop is also timed in CPU seconds of the process, which count the work
whatever else shares the machine, as long as each run has its cores to itself or runs one thread
(``--threads 1``): with more threads than free cores, OpenMP threads spin while they wait for each
other. Within a case the arms alternate in A B B A order so that drift in the machine's speed
affects them alike, after ``--warmup`` uncounted rounds; medians are reported, with ratios against
plain TRL, and each round's CPU-second ratio. Each run's per-step losses are kept and compared
with TRL's.

    python benchmarks/bench_train.py [--cases gemma-lora gemma-full smollm2-lora] [--examples N] [--repeats N]
        [--micro-batch-size N] [--warmup N] [--threads N] [--arms tunescope trl trl-padding-free] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tunescope.data import load_examples
from tunescope.data.templates import NAMED_TEMPLATES
from tunescope.models import load_model, load_tokenizer
from tunescope.train import TrainConfig, prepare_training_data, train
from tunescope.train.pipeline import _peft_config


@dataclass(frozen=True)
class Case:
    """One comparison: a model and method, trained by each arm."""

    model: str
    method: str
    examples: int
    repeats: int
    arms: tuple[str, ...] = ("tunescope", "trl")
    warmup: int = 1
    threads: int | None = None
    """Torch threads per run; None: torch's default (one per core)."""
    max_length: int = 256
    batch_size: int = 8
    micro_batch_size: int = 4
    data: str = "chitchat"


# Sized for a 2-core machine shared with other jobs: 16 examples (two optimizer steps of 8), few rounds.
# Gemma's full fine-tuning (fp32 AdamW over 268M parameters) is the slowest; it gets one round.
CASES = {
    "gemma-lora": Case("gemma3-270m", "lora", 16, 2, ("tunescope", "trl", "trl-padding-free")),
    "smollm2-lora": Case("smollm2", "lora", 16, 2),
    "gemma-full": Case("gemma3-270m", "full", 16, 1),
}


def settings(case: Case, out: Path) -> TrainConfig:
    return TrainConfig(
        model=case.model, data=case.data, subset_size=case.examples, max_length=case.max_length,
        method=case.method, epochs=1, effective_batch_size=case.batch_size, micro_batch_size=case.micro_batch_size,
        warmup_ratio=0.0, precision="fp32", save_steps=10_000, out=str(out),
    )  # fmt: skip


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), in MiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


LOOP: dict[str, float] = {}
"""Wall-clock and CPU seconds of the last ``Trainer.train()`` in this process."""


def clock_training_loops() -> None:
    """Time every ``Trainer.train()`` (both arms' trainers inherit it) in wall-clock and CPU seconds.

    CPU seconds (all threads of this process) count the work done, whatever else the machine runs;
    on a shared machine their ratio is steadier than that of wall-clock times.
    """
    from transformers import Trainer

    original = Trainer.train

    def train_and_time(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            LOOP.update(loop_s=time.perf_counter() - wall, loop_cpu_s=time.process_time() - cpu)

    Trainer.train = train_and_time


def run_tunescope(case: Case, out: Path) -> dict:
    started = time.perf_counter()
    result = train(settings(case, out))
    job = time.perf_counter() - started
    losses = [json.loads(line)["loss"] for line in result.metrics.read_text().splitlines()]
    return {"job_s": job, "losses": losses}


def run_plain_trl(case: Case, out: Path, padding_free: bool) -> dict:
    """What a user would write with TRL directly: conversational prompt/completion data."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    config = settings(case, out)
    started = time.perf_counter()
    examples = load_examples(config).examples
    dataset = datasets.Dataset.from_list(
        [{"prompt": ex.messages[:-1], "completion": ex.messages[-1:]} for ex in examples]
    )
    tokenizer = load_tokenizer(case.model)
    if not tokenizer.chat_template:  # a base model: the user supplies a template, here tunescope's default
        tokenizer.chat_template = NAMED_TEMPLATES["plain"]
    model = load_model(case.model)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(out), num_train_epochs=1, learning_rate=config.effective_learning_rate,
            lr_scheduler_type="cosine", warmup_steps=0.0, per_device_train_batch_size=case.micro_batch_size,
            gradient_accumulation_steps=case.batch_size // case.micro_batch_size, gradient_checkpointing=False,
            bf16=False, optim="adamw_torch_fused", seed=42, logging_steps=1, save_strategy="no", report_to="none",
            disable_tqdm=True, dataloader_pin_memory=False,
            # TRL refuses a max_length it would not enforce without packing; no example here is longer.
            max_length=None if padding_free else case.max_length, padding_free=padding_free,
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=_peft_config(config) if case.method == "lora" else None,
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(out / "final"))
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"job_s": time.perf_counter() - started, "losses": losses}


def run_arm(case: Case, arm: str, out: Path) -> dict:
    """One run of one arm in this process, with its peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    clock_training_loops()
    if arm == "tunescope":
        result = run_tunescope(case, out)
    else:
        result = run_plain_trl(case, out, padding_free=arm == "trl-padding-free")
    return {**result, **LOOP, "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_in_fresh_process(case_name: str, case: Case, arm: str, workdir: Path) -> dict:
    command = [sys.executable, __file__, "--child", arm, "--cases", case_name, "--workdir", str(workdir),
               "--examples", str(case.examples), "--micro-batch-size", str(case.micro_batch_size)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if case.threads:
        env.update(OMP_NUM_THREADS=str(case.threads), MKL_NUM_THREADS=str(case.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{case_name}/{arm} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def epoch_tokens(case: Case) -> tuple[int, int]:
    """Non-padding tokens in the epoch, and the number of examples cut at max_length (none allowed)."""
    data = prepare_training_data(settings(case, Path("unused")), load_tokenizer(case.model))
    return sum(len(example.input_ids) for example in data.examples), data.n_truncated


def load_average() -> list[str]:
    """The machine's 1-, 5- and 15-minute load averages (other jobs share the CPUs)."""
    return Path("/proc/loadavg").read_text().split()[:3]


def bench_case(name: str, case: Case, workdir: Path) -> dict:
    load_at_start = load_average()
    tokens, truncated = epoch_tokens(case)
    if truncated:
        sys.exit(f"{name}: {truncated} examples exceed max_length; padding-free TRL would not truncate them")
    runs: dict[str, list[dict]] = {arm: [] for arm in case.arms}
    # The first `warmup` rounds (page cache, first-use kernel selection) are not counted. Every arm runs in a
    # fresh process, so on a busy machine a warm-up round buys little beyond a warm page cache.
    for repeat in range(case.warmup + case.repeats):
        order = list(case.arms) if repeat % 2 == 0 else list(reversed(case.arms))
        for arm in order:
            result = run_in_fresh_process(name, case, arm, workdir)
            print(f"{name} round {repeat} {arm}: loop {result['loop_s']:.1f} s ({result['loop_cpu_s']:.1f} CPU s), "
                  f"peak {result['peak_rss_mb']:.0f} MiB, load {load_average()[0]}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if repeat >= case.warmup:
                runs[arm].append(result)

    def median(arm: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[arm])

    loop_rate = {arm: round(tokens / median(arm, "loop_s"), 1) for arm in case.arms}
    loop_cpu_rate = {arm: round(tokens / median(arm, "loop_cpu_s"), 2) for arm in case.arms}
    job_rate = {arm: round(tokens / median(arm, "job_s"), 1) for arm in case.arms}
    reference = runs["trl"][0]["losses"]
    return {
        "settings": asdict(case),
        "load_average": {"start": load_at_start, "end": load_average()},
        "epoch_tokens": tokens,
        "training_loop_s": {arm: [round(run["loop_s"], 2) for run in runs[arm]] for arm in case.arms},
        "training_loop_cpu_s": {arm: [round(run["loop_cpu_s"], 2) for run in runs[arm]] for arm in case.arms},
        "training_loop_tokens_per_s": loop_rate,
        "training_loop_tokens_per_cpu_s": loop_cpu_rate,
        "whole_job_tokens_per_s": job_rate,
        "ratio_training_loop": {arm: round(loop_rate[arm] / loop_rate["trl"], 3) for arm in case.arms},
        "ratio_training_loop_cpu": {arm: round(loop_cpu_rate[arm] / loop_cpu_rate["trl"], 3) for arm in case.arms},
        # Each round's ratio, from the two runs made back to back in that round: the spread of the medians.
        "ratio_training_loop_cpu_per_round": {
            arm: [
                round(plain["loop_cpu_s"] / run["loop_cpu_s"], 3)
                for run, plain in zip(runs[arm], runs["trl"], strict=True)
            ]
            for arm in case.arms
        },
        "ratio_whole_job": {arm: round(job_rate[arm] / job_rate["trl"], 3) for arm in case.arms},
        "peak_rss_mb": {arm: median(arm, "peak_rss_mb") for arm in case.arms},
        "losses_trl": [round(loss, 5) for loss in reference],
        # Largest per-step difference from TRL's losses over every counted run of every arm.
        "max_loss_difference": {
            arm: max(abs(a - b) for run in runs[arm] for a, b in zip(run["losses"], reference, strict=True))
            for arm in case.arms
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--examples", type=int, help="override every case's number of examples")
    parser.add_argument("--repeats", type=int, help="override every case's number of counted rounds")
    parser.add_argument(
        "--micro-batch-size", type=int, help="override every case's micro-batch (of the 8 examples of each step: 4)"
    )
    parser.add_argument("--warmup", type=int, help="override every case's number of uncounted warm-up rounds (1)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads per run. On a machine shared with other jobs, 1 keeps CPU seconds a measure of work: "
        "with more threads than free cores, OpenMP threads spin at every barrier while their partner waits for a core",
    )
    parser.add_argument("--arms", nargs="+", help="run only these of a case's arms (plain TRL, the reference, always)")
    parser.add_argument("--out", type=Path, help="also write the results here (JSON)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one arm once in this process
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    def configured(name: str) -> Case:
        case = CASES[name]
        overrides = {
            "examples": args.examples, "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
            "micro_batch_size": args.micro_batch_size,
        }  # fmt: skip
        if args.arms and not args.child:
            overrides["arms"] = tuple(arm for arm in case.arms if arm in args.arms or arm == "trl")
        return Case(**{**asdict(case), **{key: value for key, value in overrides.items() if value is not None}})

    if args.child:
        if os.environ.get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        print(json.dumps(run_arm(configured(args.cases[0]), args.child, args.workdir / args.child)))
        return

    import torch

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads or torch.get_num_threads()} torch "
        f"threads per run, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}",
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            result["cases"][name] = bench_case(name, configured(name), Path(tmp))
            print(json.dumps({name: result["cases"][name]}), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
