"""Token-shift speed and memory: tunescope's engine against the AlignTDS recipe and against bare forward passes.

Three figures, measured in one run on one machine, on greedy 128-token responses of a tuned
SmolLM2-135M-Instruct (the embedded default model) to MT-bench prompts:

1. **vs the AlignTDS recipe.** AlignTDS scores a response by running each model once per response
   token over the whole prefix (batch 1, full logits, no KV cache), keeping the top 30 candidates
   with their decoded text and the decoded prefix, then computing KL/TR/TP from those lists. That
   recipe is written out below (``aligntds_recipe``) and timed on a few responses; tunescope's
   ``compute_shift`` scores the same responses (same two models, same token ids) in AlignTDS mode,
   and in exact mode. The classes of AlignTDS mode must equal the recipe's, position by position.
2. **vs the bound.** Bare batched forward passes of both models over exactly the same token ids,
   batches and padding (``model(input_ids, attention_mask).logits``, nothing else) are the least
   any exact method must do; tunescope's scoring throughput is reported as a share of theirs.
3. **LoRA pair memory.** Each configuration runs in a fresh subprocess, which reports its peak
   resident set size (VmHWM) and its RSS after importing torch and transformers: a single
   model doing the bare batched forward pass, the LoRA pair scored by tunescope (one model, base via
   ``disable_adapter``), and, for context, the two-model pair.

The tuned models are, by default, a LoRA adapter with random non-zero weights (small scale) and the
same adapter merged into a full model, so that both pairs compute identical numbers; ``--lora``
and ``--full`` take trained runs instead.

    python benchmarks/bench_shift.py [--examples 8] [--baseline-examples 2] [--tokens 128] [--lora RUN --full RUN]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tunescope.generate import GenerateConfig, generate
from tunescope.models import load_model, load_tokenizer
from tunescope.shift import ShiftConfig, compute_shift, load_pair
from tunescope.shift.inputs import build_inputs, read_responses

MODEL = "smollm2"


# ---------------------------------------------------------------------------------------------
# Set-up: tuned models and 128-token responses


def synthetic_adapter(workdir: Path) -> tuple[Path, Path]:
    """A LoRA adapter on the default model with small random weights, and the same adapter merged."""
    from peft import LoraConfig, get_peft_model

    adapter, merged = workdir / "adapter", workdir / "merged"
    if not (merged / "config.json").is_file():
        torch.manual_seed(0)
        config = LoraConfig(r=8, lora_alpha=1, init_lora_weights=False, target_modules="all-linear")
        model = get_peft_model(load_model(MODEL), config)
        model.save_pretrained(adapter)
        tokenizer = load_tokenizer(MODEL)
        model.merge_and_unload().save_pretrained(merged)
        tokenizer.save_pretrained(merged)
    return adapter, merged


def responses_of_length(tuned: Path, workdir: Path, count: int, tokens: int, name: str) -> Path:
    """Greedy responses of the tuned model to MT-bench prompts, keeping ``count`` that are ``tokens`` long."""
    everything = workdir / f"generated-{name}.jsonl"
    generate(GenerateConfig(model=str(tuned), data="mtbench", out=str(everything), max_new_tokens=tokens,
                            subset_size=min(80, count + 8), batch_size=8))  # fmt: skip
    records = [json.loads(line) for line in everything.read_text().splitlines()]
    full_length = [r for r in records if len(r["output_token_ids"]) == tokens and r["finish_reason"] == "length"]
    if len(full_length) < count:
        raise SystemExit(f"only {len(full_length)} responses reached {tokens} tokens; ask for fewer --examples")
    chosen = workdir / f"responses-{name}.jsonl"
    chosen.write_text("".join(json.dumps(r) + "\n" for r in full_length[:count]))
    return chosen


# ---------------------------------------------------------------------------------------------
# Baseline 1: the AlignTDS recipe


def aligntds_recipe(model, tokenizer, prompt_ids: list[int], response_ids: list[int], top_k: int = 30) -> list:
    """One forward pass over the whole prefix per response token, keeping the top-k candidates."""
    positions = []
    input_ids = torch.tensor([prompt_ids])
    for token in response_ids:
        with torch.no_grad():
            logits = model(input_ids).logits[:, -1, :]
            probs = torch.softmax(logits, dim=-1)
            top = logits.topk(k=top_k).indices
        logits, probs, top = logits.numpy(), probs.numpy(), top.numpy()
        prefix = tokenizer.decode(input_ids[0])  # AlignTDS stores the decoded prefix at every position
        candidates = [
            {"token_id": int(i), "token": tokenizer.decode(int(i)), "logit": float(logits[0][i]),
             "prob": float(probs[0][i])}
            for i in top[0]
        ]  # fmt: skip
        positions.append({"tokens": candidates, "prefix": prefix})
        input_ids = torch.cat([input_ids, torch.tensor([[token]])], dim=1)
    return positions


def aligntds_numbers(base_list: list[dict], tuned_list: list[dict], k: int = 30, cap: int = 50) -> tuple:
    """KL, TR, TP from two stored lists, looked up by decoded text as AlignTDS does."""

    def renormalised(candidates):
        top = max(c["logit"] for c in candidates)
        total = sum(math.exp(c["logit"] - top) for c in candidates)
        return [math.exp(c["logit"] - top) / total for c in candidates]

    base_w, tuned_w = renormalised(base_list), renormalised(tuned_list)
    base_texts, tuned_texts = [c["token"] for c in base_list[:k]], [c["token"] for c in tuned_list[:k]]
    kl = 0.0
    for text in set(base_texts) | set(tuned_texts):
        w1 = base_w[base_texts.index(text)] if text in base_texts else 0
        w2 = tuned_w[tuned_texts.index(text)] if text in tuned_texts else 0
        if w1 > 0 and w2 > 0:
            kl += w1 * math.log(w1 / w2)
    searched = [c["token"] for c in base_list[:cap]]
    top_text = tuned_texts[0]
    rank = searched.index(top_text) if top_text in searched else cap
    return kl, rank, base_w[rank] if top_text in searched else 0.0


def run_aligntds_recipe(base, tuned, tokenizer, inputs) -> tuple[float, dict]:
    """Seconds for the recipe on ``inputs`` (both models, metrics included) and its class per position."""
    classes = {}
    started = time.perf_counter()
    for x in inputs:
        base_lists = aligntds_recipe(base, tokenizer, x.base_prompt_ids, x.response_ids)
        tuned_lists = aligntds_recipe(tuned, tokenizer, x.tuned_prompt_ids, x.response_ids)
        for t, (b, u) in enumerate(zip(base_lists, tuned_lists, strict=True)):
            _, rank, _ = aligntds_numbers(b["tokens"], u["tokens"])
            classes[(x.example_id, t)] = "unshifted" if rank == 0 else "marginal" if rank < 3 else "shifted"
    return time.perf_counter() - started, classes


# ---------------------------------------------------------------------------------------------
# Baseline 2: bare batched forward passes


def batches(inputs, batch_size: int) -> list:
    """The engine's batching: longest first, ``batch_size`` responses per batch."""
    order = sorted(inputs, key=lambda x: -(max(len(x.tuned_prompt_ids), len(x.base_prompt_ids)) + len(x.response_ids)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, sequences))
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)], mask[row, : len(sequence)] = torch.tensor(sequence), 1
    return ids, mask


def bare_forwards(pair, inputs, batch_size: int) -> float:
    """Seconds for one plain forward pass of each model per batch over the same ids as the engine."""
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches(inputs, batch_size):
            for side in ("tuned", "base"):
                prompts = [x.tuned_prompt_ids if side == "tuned" else x.base_prompt_ids for x in batch]
                ids, mask = padded([p + x.response_ids for p, x in zip(prompts, batch, strict=True)])
                with pair.side(side) as model:
                    model(input_ids=ids, attention_mask=mask).logits  # noqa: B018 - the work being timed
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# tunescope


def shift_config(workdir: Path, responses: Path, tuned: Path, name: str, **settings) -> ShiftConfig:
    return ShiftConfig(base=MODEL, tuned=str(tuned), responses=str(responses), out=str(workdir / name), **settings)


def run_tunescope(pair, config: ShiftConfig) -> tuple[float, float, object]:
    """(scoring seconds, whole-call seconds incl. summary and viewer, result), models already loaded."""
    started = time.perf_counter()
    result = compute_shift(config, overwrite=True, pair=pair)
    return result.summary["throughput"]["seconds"], time.perf_counter() - started, result


def inputs_for(pair, responses: Path) -> list:
    records = read_responses(responses)
    return build_inputs(records, pair.tuned_tokenizer, pair.base_tokenizer, vocab_size=pair.vocab_size,
                        base_prompt="same", template=None, include_stop_token=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Memory, one fresh process per configuration


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """This process's RSS high-water mark (VmHWM).

    Not ``ru_maxrss``: Linux carries that across fork and exec, so a child started by a big parent
    reports the parent's size.
    """
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def memory_child(kind: str, workdir: Path, tuned: Path, responses: Path, batch_size: int) -> None:
    import transformers  # noqa: F401 - counted in the baseline RSS, as in every configuration

    after_imports = rss_mb()
    if kind == "single":
        model, tokenizer = load_model(MODEL).eval(), load_tokenizer(MODEL)
        loaded = rss_mb()
        inputs = build_inputs(read_responses(responses), tokenizer, tokenizer, vocab_size=len(tokenizer),
                              base_prompt="same", template=None, include_stop_token=False)  # fmt: skip
        with torch.inference_mode():
            for batch in batches(inputs, batch_size):
                ids, mask = padded([x.tuned_prompt_ids + x.response_ids for x in batch])
                model(input_ids=ids, attention_mask=mask).logits  # noqa: B018
    else:
        pair = load_pair(MODEL, str(tuned))
        loaded = rss_mb()
        compute_shift(shift_config(workdir, responses, tuned, f"memory-{kind}", batch_size=batch_size,
                                   bootstrap_samples=100), overwrite=True, pair=pair)  # fmt: skip
    peak = peak_rss_mb()
    print(json.dumps({"after_imports_mb": after_imports, "after_load_mb": loaded, "peak_mb": peak}))


def measure_memory(kind: str, args: argparse.Namespace, workdir: Path, tuned: Path, responses: Path) -> dict:
    command = [sys.executable, __file__, "--memory-child", kind, "--workdir", str(workdir), "--tuned-dir",
               str(tuned), "--responses", str(responses), "--batch-size", str(args.batch_size)]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8, help="responses for the throughput and memory figures")
    parser.add_argument("--baseline-examples", type=int, default=2, help="responses run through the AlignTDS recipe")
    parser.add_argument("--tokens", type=int, default=128, help="response length")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora", help="a trained LoRA adapter or run on smollm2 (default: a random small adapter)")
    parser.add_argument("--full", help="a fully fine-tuned smollm2 (default: the LoRA adapter merged)")
    parser.add_argument("--workdir", help="keep the models and responses here between runs")
    parser.add_argument("--memory-child", choices=["single", "lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--tuned-dir", help=argparse.SUPPRESS)
    parser.add_argument("--responses", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, Path(args.workdir), Path(args.tuned_dir), Path(args.responses), args.batch_size)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-shift-"))
    workdir.mkdir(parents=True, exist_ok=True)
    adapter, merged = synthetic_adapter(workdir) if not (args.lora and args.full) else (None, None)
    lora, full = Path(args.lora or adapter), Path(args.full or merged)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; workdir {workdir}")  # fmt: skip
    # Each pair scores its own tuned model's greedy responses, as in the paper.
    responses = {
        tuned: responses_of_length(tuned, workdir, args.examples, args.tokens, name)
        for tuned, name in ((full, "full"), (lora, "lora"))
    }
    # The recipe's cost grows with the prompt, so it runs on the responses with the most typical prompts.
    lines = responses[full].read_text().splitlines(keepends=True)
    lengths = [len(json.loads(line)["prompt_token_ids"]) for line in lines]
    median = statistics.median(lengths)
    typical = sorted(range(len(lines)), key=lambda i: abs(lengths[i] - median))[: args.baseline_examples]
    baseline_responses = workdir / "baseline-responses.jsonl"
    baseline_responses.write_text("".join(lines[i] for i in sorted(typical)))
    print(f"prompt lengths (tokens) of the {len(lines)} responses: {sorted(lengths)}")

    # Figure 1 and 2 on the two-model pair (the AlignTDS recipe loads two models too).
    pair = load_pair(MODEL, str(full))
    run_tunescope(pair, shift_config(workdir, baseline_responses, full, "warm-up", bootstrap_samples=10))
    baseline_inputs = inputs_for(pair, baseline_responses)
    prompt_lengths = [len(x.tuned_prompt_ids) for x in baseline_inputs]
    print(f"\n1. vs the AlignTDS recipe: {len(baseline_inputs)} responses x {args.tokens} tokens, "
          f"prompts of {prompt_lengths} tokens")  # fmt: skip
    recipe_s, recipe_classes = run_aligntds_recipe(pair.base, pair.tuned, pair.tuned_tokenizer, baseline_inputs)
    # tunescope takes about 1% as long, so it is timed five times and the median kept.
    compat_runs = [run_tunescope(pair, shift_config(workdir, baseline_responses, full, "aligntds", mode="aligntds"))
                   for _ in range(5)]  # fmt: skip
    exact_runs = [run_tunescope(pair, shift_config(workdir, baseline_responses, full, "exact-small"))
                  for _ in range(5)]  # fmt: skip
    compat_s, compat_total_s = (statistics.median(run[i] for run in compat_runs) for i in (0, 1))
    exact_s, exact_total_s = (statistics.median(run[i] for run in exact_runs) for i in (0, 1))
    compat, exact = compat_runs[-1][2], exact_runs[-1][2]
    ours = {}
    for result, name in ((compat, "aligntds"), (exact, "exact")):
        import pyarrow.parquet as pq

        table = pq.read_table(result.tokens, columns=["example_id", "position", "klass"]).to_pylist()
        ours[name] = {(row["example_id"], row["position"]): row["klass"] for row in table}
    identical = sum(ours["aligntds"][key] == klass for key, klass in recipe_classes.items())
    exact_agree = sum(ours["exact"][key] == klass for key, klass in recipe_classes.items())
    n = len(recipe_classes)
    print(f"   AlignTDS recipe            {recipe_s:8.1f} s   {n / recipe_s:8.2f} tokens/s")
    print(
        f"   tunescope --mode aligntds  {compat_total_s:8.1f} s   {n / compat_total_s:8.2f} tokens/s   "
        f"speed-up {recipe_s / compat_total_s:6.1f}x (target >= 100x); scoring only {recipe_s / compat_s:6.1f}x"
    )
    print(
        f"   tunescope --mode exact     {exact_total_s:8.1f} s   {n / exact_total_s:8.2f} tokens/s   "
        f"speed-up {recipe_s / exact_total_s:6.1f}x; scoring only {recipe_s / exact_s:6.1f}x"
    )
    print(f"   classes identical to the recipe: aligntds mode {identical}/{n}; exact mode {exact_agree}/{n}")

    print(f"\n2. vs bare batched forward passes of both models: {args.examples} responses, batch {args.batch_size}")
    rows = []
    for label, tuned in (("two models (full)", full), ("LoRA pair (disable_adapter)", lora)):
        this_pair = pair if tuned == full else load_pair(MODEL, str(tuned))
        inputs = inputs_for(this_pair, responses[tuned])
        tokens = sum(len(x.response_ids) for x in inputs)
        bound, scored, whole = [], [], []
        for round_name in ("A", "B", "B", "A"):  # alternate, so drift in machine speed hits both alike
            if round_name == "A":
                bound.append(bare_forwards(this_pair, inputs, args.batch_size))
            else:
                seconds, total, _ = run_tunescope(this_pair, shift_config(
                    workdir, responses[tuned], tuned, "throughput", batch_size=args.batch_size))  # fmt: skip
                scored.append(seconds)
                whole.append(total)
        b, s, w = (statistics.median(v) for v in (bound, scored, whole))
        rows.append((label, tokens / b, tokens / s, tokens / w))
        print(
            f"   {label:28s} bound {tokens / b:7.1f} tok/s | shift scoring {tokens / s:7.1f} tok/s "
            f"= {b / s:6.1%} | whole call (summary, viewer) {tokens / w:7.1f} tok/s = {b / w:6.1%}  (target >= 80%)"
        )
        if tuned != full:
            del this_pair

    print(f"\n3. peak memory (fresh process each, RSS), {args.examples} responses, batch {args.batch_size}")
    memory = {kind: measure_memory(kind, args, workdir, tuned, responses[tuned])
              for kind, tuned in (("single", lora), ("lora", lora), ("full", full))}  # fmt: skip
    base_rss = memory["single"]["after_imports_mb"]
    for kind, label in (("single", "single model, bare forward"), ("lora", "LoRA pair, tunescope shift"),
                        ("full", "two models, tunescope shift")):  # fmt: skip
        m = memory[kind]
        above = m["peak_mb"] - m["after_imports_mb"]
        print(
            f"   {label:30s} peak {m['peak_mb']:7.0f} MB (after imports {m['after_imports_mb']:5.0f} MB, "
            f"models loaded {m['after_load_mb']:5.0f} MB) | above imports {above:6.0f} MB"
        )
    single = memory["single"]["peak_mb"] - base_rss
    lora_peak = memory["lora"]["peak_mb"] - memory["lora"]["after_imports_mb"]
    print(
        f"   LoRA pair / single model: {memory['lora']['peak_mb'] / memory['single']['peak_mb']:.2f}x whole process, "
        f"{lora_peak / single:.2f}x above imports (target <= 1.3x)"
    )


if __name__ == "__main__":
    main()
