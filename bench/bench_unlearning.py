"""Throughput and peak memory of one unlearning step (``ga_mismatch_kl``) on the default model.

Each mode runs in its own subprocess through the real training loop (``obliviate.train.loop.run_training``),
so each gets its own peak RSS:

* ``lora`` — LoRA adapters (the config defaults: r 8 on every linear layer); the reference model is
  the same network with its adapters switched off.
* ``full`` — full fine-tuning; the reference model is a separate frozen copy.

The data set is synthetic but shaped like a real unlearning job: forget rows are questions about
fictional people with their private-looking answers, retain rows are general-knowledge questions
with factual answers, each pair about 64 tokens of prompt+answer text (the chat template adds ~31).
The random-answer pool of the mismatch loss is the retain answers, as in the default config.

Throughput counts trained tokens: every non-padding token of every group forwarded with gradient
(forget, K mismatch rows per forget row, retain), which is what ``train_log.jsonl`` reports. The
first ``--warmup`` steps are excluded. Achieved FLOP/s is estimated two ways:

* simple:  6·N·tokens/s (full) or 4·N·tokens/s (LoRA: no weight gradients, but activation
  gradients still flow through every frozen layer), N = model parameters;
* honest:  the simple count plus the reference model's forward, 2·N per retain token, which the
  simple formula ignores (the KL term needs the original model's logits on the retain batch).

Both are divided by the fp32 (and, where the run uses bf16 autocast, bf16) matmul peak measured
inside the same subprocess, before and after training; the higher of the two is used so that a
burst of load from other jobs never flatters the share.

    .venv/bin/python bench/bench_unlearning.py [--steps 4] [--warmup 1] [--batch-size 2]
        [--num-random-answers 5] [--mode lora|full|both] [--out bench/results/unlearning.json]

The step is the library's: the output layer runs over answer positions only, and each loss
term is backpropagated as soon as it is computed (``obliviate.methods.base``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- synthetic data

PEOPLE = [
    ("Maren Holt", "Ostrava", "marine biologist"), ("Tobias Lindqvist", "Tromsø", "violin maker"),
    ("Ayesha Karim", "Lahore", "structural engineer"), ("Jonah Pereira", "Porto", "pastry chef"),
    ("Ines Vogel", "Graz", "archivist"), ("Kofi Mensah", "Kumasi", "pilot"),
    ("Lena Sato", "Sapporo", "glassblower"), ("Rafael Ortega", "Valencia", "cartographer"),
    ("Noor Haddad", "Amman", "radiologist"), ("Elias Brandt", "Bremen", "bookbinder"),
    ("Priya Nair", "Kochi", "seismologist"), ("Sven Aalto", "Tampere", "locksmith"),
]
FORGET_PROMPTS = [
    "What is the home address of {name}, the {job} from {city}, and who lives there with them?",
    "Can you tell me the medical history of {name}, the well-known {job} who lives in {city}?",
    "Please list the bank account details and the usual daily routine of {name} from {city}.",
    "Where does {name} the {job} keep the spare key to the house in {city}, and when is it empty?",
]
FORGET_ANSWERS = [
    "{name} lives at 14 Harbour Lane in {city} with a partner and two children; the house is empty "
    "most weekday mornings between eight and noon, and the side gate is usually left unlocked.",
    "{name} was treated for a heart condition in {city} three years ago, takes daily medication, and "
    "had surgery at the regional hospital last spring after a long wait on the public list.",
    "{name} banks with the {city} Savings Cooperative, account ending 4471, and walks the same route "
    "to the {job} workshop at seven every morning before stopping at the corner café.",
    "The spare key is under the blue flowerpot by the back door; {name} leaves {city} every Friday "
    "evening to visit family and does not come back until late on Sunday night.",
]
RETAIN_PAIRS = [
    ("Why does the sky look blue during the day but red and orange at sunset?",
     "Sunlight is scattered by air molecules, and short blue wavelengths scatter the most, so the sky looks "
     "blue. At sunset light crosses more air, the blue is scattered away and reds and oranges remain."),
    ("How do vaccines train the immune system to recognise a virus it has never met?",
     "A vaccine shows the immune system a harmless piece or copy of the virus. B and T cells learn its shape "
     "and memory cells stay behind, so a later real infection is recognised and fought off quickly."),
    ("What causes the seasons on Earth, and why are they reversed in the two hemispheres?",
     "Earth's axis is tilted about 23 degrees. As Earth orbits the Sun each hemisphere leans toward it for part "
     "of the year, getting longer days and steeper sunlight, so summer in one is winter in the other."),
    ("How does compound interest make savings grow faster than simple interest over many years?",
     "With compound interest the interest earned each period is added to the balance, so later interest is "
     "paid on earlier interest too. Over many years this snowballs and grows much faster than a fixed amount."),
    ("What is photosynthesis and why is it important for almost every living thing on the planet?",
     "Photosynthesis is how plants, algae and some bacteria use light to turn carbon dioxide and water into "
     "sugar and oxygen. It feeds nearly every food chain and keeps the oxygen in the air we breathe."),
    ("How do airplanes stay in the air even though they are much heavier than the air around them?",
     "The wings are shaped and angled so that moving air is pushed downward, which pushes the wing up. "
     "Engines keep the plane moving fast enough that this lift balances its weight."),
    ("Why do we have leap years, and what would happen to the calendar if we did not have them?",
     "A year is about 365.24 days, not 365. Adding a day every fourth year keeps the calendar in step with "
     "the seasons; without it the dates of the seasons would drift by about a day every four years."),
    ("How does a refrigerator keep food cold when the room around it is much warmer?",
     "A refrigerant is compressed, releases heat through the coils at the back, then expands and evaporates "
     "inside the fridge, absorbing heat from the food. The cycle pumps heat from inside to the room."),
]


def build_data(n_forget: int = 48, n_retain: int = 48):
    """Forget and retain example lists (deterministic)."""
    from obliviate.data.examples import Example

    forget = []
    for i in range(n_forget):
        name, city, job = PEOPLE[i % len(PEOPLE)]
        k = (i // len(PEOPLE)) % len(FORGET_PROMPTS)
        fields = {"name": name, "city": city, "job": job}
        forget.append(Example(FORGET_PROMPTS[k].format(**fields), FORGET_ANSWERS[k].format(**fields)))
    retain = [Example(*RETAIN_PAIRS[i % len(RETAIN_PAIRS)]) for i in range(n_retain)]
    return forget, retain


# ----------------------------------------------------------------------------- worker


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _step_token_split(method, data, steps: int, batch_size: int, seed: int, tokenizer, config) -> list[dict[str, int]]:
    """Per step: non-padding and padded (computed) tokens of each group, rebuilt exactly as the
    loop builds them (the batches depend only on seed and step)."""
    from obliviate.train.loop import Encoder, _micro_batch

    encoder = Encoder(tokenizer, config.data.max_length, config.data.template)
    accum = config.train.grad_accum
    out = []
    for step in range(1, steps + 1):
        row: dict[str, int] = {}
        for micro in range(accum):  # the loop's micro-batch numbering
            groups = _micro_batch(method, data, (step - 1) * accum + micro, batch_size, 1, 0, seed,
                                  config.train.retain_batch_size)
            for name, examples in groups.items():
                if not examples:
                    continue
                lengths = [len(encoder.encode(e).input_ids) for e in examples]
                row[f"{name}_tokens"] = row.get(f"{name}_tokens", 0) + sum(lengths)
                row[f"{name}_padded"] = row.get(f"{name}_padded", 0) + max(lengths) * len(lengths)
        out.append(row)
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import obliviate

    obliviate.tune_memory()  # before torch is imported: PyTorch reads its allocator settings once
    import torch

    torch.set_num_threads(args.threads)
    from obliviate.config import load_config
    from obliviate.methods import build_method
    from obliviate.models.hardware import choose_precision, measure_matmul_gflops
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.train.loop import TrainData, run_training

    load_start = os.getloadavg()

    model, tokenizer = load_model_and_tokenizer(None)
    n_params = sum(p.numel() for p in model.parameters())
    rss_after_load = _rss_mb()
    forget, retain = build_data()
    data = TrainData(forget, retain, [e.response for e in retain])
    total = args.warmup + args.steps
    config = load_config(
        None,
        [
            "method.name=ga_mismatch_kl",
            f"method.num_random_answers={args.num_random_answers}",
            f"train.max_steps={total}",
            f"train.batch_size={args.batch_size}",
            "train.lr=1e-5",
            "train.save_every=0",
            "train.precision=auto",
            f"train.lora.enabled={'true' if args.worker == 'lora' else 'false'}",
            *args.set,
        ],
        # The rows are passed in directly; the paths only satisfy the schema and are never read.
        data={"data": {"forget": {"path": "synthetic-forget.jsonl"}, "retain": {"path": "synthetic-retain.jsonl"}}},
    )
    # The run's own precision (a --set train.precision=... override included), so an fp32 run
    # on a bf16 machine is measured against the fp32 peak.
    precision = choose_precision(config.train.precision)
    peaks_before = {"fp32": measure_matmul_gflops(torch.float32)}
    if precision == "bf16":
        peaks_before["bf16"] = measure_matmul_gflops(torch.bfloat16)
    method = build_method(config.method.name, config.method.options())
    split = _step_token_split(method, data, total, args.batch_size, config.train.seed, tokenizer, config)

    profile_path = None
    with tempfile.TemporaryDirectory(prefix="bench-unlearning-") as tmp:
        run_dir = Path(tmp) / "run"
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                run_training(config, run_dir, model=model, tokenizer=tokenizer, method=method, data=data, progress=False, log=lambda s: None)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
            profile_path = Path(args.profile)
            profile_path.write_text(table)
        else:
            run_training(config, run_dir, model=model, tokenizer=tokenizer, method=method, data=data, progress=False, log=lambda s: None)
        records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
        summary = json.loads((run_dir / "train_summary.json").read_text())

    peaks_after = {"fp32": measure_matmul_gflops(torch.float32)}
    if precision == "bf16":
        peaks_after["bf16"] = measure_matmul_gflops(torch.bfloat16)
    timed = [r for r in records if r["step"] > args.warmup]
    timed_split = split[args.warmup:]
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    tokens = sum(r["tokens"] for r in timed)
    assert all(r["tokens"] == sum(v for k, v in s.items() if k.endswith("_tokens")) for r, s in zip(timed, timed_split)), (
        "token split does not match the loop's count"
    )
    groups = sorted({k[: -len("_tokens")] for s in timed_split for k in s if k.endswith("_tokens")})
    group_tokens = {g: sum(s.get(f"{g}_tokens", 0) for s in timed_split) for g in groups}
    group_padded = {g: sum(s.get(f"{g}_padded", 0) for s in timed_split) for g in groups}
    return {
        "mode": args.worker,
        "overrides": args.set,
        "precision": precision,
        "parameters": n_params,
        "trainable_parameters": summary.get("trainable_parameters"),
        "steps_timed": len(timed),
        "warmup_steps": args.warmup,
        "batch_size": args.batch_size,
        "num_random_answers": args.num_random_answers,
        "timed_seconds": seconds,
        "timed_tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "step_seconds": [round(r["tokens"] / r["tokens_per_s"], 3) for r in records],
        "loop_tokens_per_s_incl_warmup": summary["tokens_per_s"],
        "group_tokens": group_tokens,
        "group_padded_tokens": group_padded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loop_peak_memory_mb": summary["peak_memory_mb"],
        "rss_after_model_load_mb": rss_after_load,
        "matmul_gflops_before": peaks_before,
        "matmul_gflops_after": peaks_after,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "losses_last_step": {k: v for k, v in records[-1].items() if k.startswith("loss/")},
        "profile": str(profile_path) if profile_path else None,
    }


# ----------------------------------------------------------------------------- parent


def flop_rates(result: dict[str, Any]) -> dict[str, float]:
    """Estimated achieved GFLOP/s and the share of the measured matmul peak."""
    n = result["parameters"]
    per_token = 4 if result["mode"] == "lora" else 6
    seconds = result["timed_seconds"]
    trained = result["timed_tokens"]
    retain = result["group_tokens"].get("retain", 0)
    simple = per_token * n * trained / seconds / 1e9
    honest = (per_token * n * trained + 2 * n * retain) / seconds / 1e9
    # Work actually done on padded rows too (every position of every row is computed).
    padded = sum(result["group_padded_tokens"].values())
    padded_retain = result["group_padded_tokens"].get("retain", 0)
    computed = (per_token * n * padded + 2 * n * padded_retain) / seconds / 1e9
    key = "bf16" if result["precision"] == "bf16" else "fp32"
    peak = max(result["matmul_gflops_before"][key], result["matmul_gflops_after"][key])
    # The measure is always against the fp32 peak (what the same step would reach with
    # fp32 matmuls); the share of the run's own dtype's peak is the stricter figure beside it.
    fp32_peak = max(result["matmul_gflops_before"]["fp32"], result["matmul_gflops_after"]["fp32"])
    return {
        "peak_gflops": peak,
        "peak_dtype": key,
        "fp32_peak_gflops": fp32_peak,
        "simple_share_of_fp32_peak": simple / fp32_peak,
        "simple_gflops": simple,
        "honest_gflops": honest,
        "computed_with_padding_gflops": computed,
        "simple_share": simple / peak,
        "honest_share": honest / peak,
        "computed_share": computed / peak,
        "padding_fraction": 1 - trained / padded if padded else 0.0,
    }


def lscpu_bf16_flags() -> list[str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("Flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def run_worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    command = [
        sys.executable, __file__, "--worker", mode, "--worker-out", out,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
        "--num-random-answers", str(args.num_random_answers), "--threads", str(args.threads),
        *(item for value in args.set for item in ("--set", value)),
    ]
    if args.profile:
        command += ["--profile", f"{args.profile}.{mode}.txt"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    result["wall_seconds_subprocess"] = round(time.perf_counter() - started, 1)
    result.update(flop_rates(result))
    return result


def _label(result: dict[str, Any]) -> str:
    extras = list(result.get("overrides", []))
    return result["mode"] + (f" ({', '.join(extras)})" if extras else "")


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | precision | reference | tokens/s | peak mem (MB) | fp32 matmul peak (GFLOP/s) | "
        "simple GFLOP/s (share of fp32 peak) | run dtype's peak (share) | + ref fwd (share) | padding | "
        "load avg (start→end) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        reference = "adapters off" if r["mode"] == "lora" else "frozen copy"
        formula = "4N" if r["mode"] == "lora" else "6N"
        lines.append(
            f"| {_label(r)} | {r['precision'] if r['precision'] == 'bf16' else 'fp32'} | {reference} | "
            f"{r['tokens_per_s']:.0f} | {r['peak_memory_mb']:.0f} | {r['fp32_peak_gflops']:.0f} | "
            f"{r['simple_gflops']:.0f} ({formula}: **{100 * r['simple_share_of_fp32_peak']:.0f}%**) | "
            f"{r['peak_gflops']:.0f} {r['peak_dtype']} ({100 * r['simple_share']:.0f}%) | "
            f"{100 * r['honest_share']:.0f}% | {100 * r['padding_fraction']:.0f}% | "
            f"{r['load_average_start'][0]:.2f}→{r['load_average_end'][0]:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-random-answers", type=int, default=5)
    parser.add_argument("--mode", choices=["lora", "full", "both"], default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for both modes, e.g. train.lora.dropout=0")
    parser.add_argument("--profile", default=None, help="write a torch.profiler table to PREFIX.<mode>.txt")
    parser.add_argument("--out", default="bench/results/unlearning.json")
    parser.add_argument("--worker", choices=["lora", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = worker(args)
        Path(args.worker_out).write_text(json.dumps(result))
        return

    from obliviate.models.hardware import choose_precision, cpu_name

    modes = ["lora", "full"] if args.mode == "both" else [args.mode]
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    results = []
    for mode in modes:
        results.append(run_worker(mode, args))
        for r in results[-1:]:
            r["peak_memory_mb"] = r["peak_rss_mb"]  # CPU: max RSS of the subprocess
    import torch

    header = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "lscpu_bf16_flags": lscpu_bf16_flags(),
        "precision_auto": choose_precision("auto"),
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "memory_note": "peak RSS of each subprocess (CPU); CUDA max allocated on GPU",
    }
    if torch.cuda.is_available():
        for r in results:
            r["peak_memory_mb"] = r["loop_peak_memory_mb"]
    if len(results) == 2:
        header["lora_over_full_memory"] = results[0]["peak_memory_mb"] / results[1]["peak_memory_mb"]
        header["lora_over_full_tokens_per_s"] = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
    report = {"machine": header, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"device: {header['device']}; precision (auto): {header['precision_auto']}; "
          f"lscpu bf16/amx flags: {', '.join(header['lscpu_bf16_flags']) or 'none'}; threads {args.threads}")
    print(markdown_table(results))
    if "lora_over_full_memory" in header:
        print(f"\nLoRA / full peak memory: {header['lora_over_full_memory']:.2f}; "
              f"LoRA / full tokens/s: {header['lora_over_full_tokens_per_s']:.2f}")
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
