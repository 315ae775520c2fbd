"""Throughput of batched generation against a one-prompt-at-a-time loop, on the default model.

Both sides decode greedily up to 48 new tokens with the same stop tokens, on the same prompts of
varied length; throughput counts the answer tokens up to the stop token (the tokens a user gets),
so padding and tokens produced after a row finished are not counted as work. The fp32 matmul
peak measured in the same run is printed beside the numbers.

    .venv/bin/python bench/bench_generation.py [--model SPEC] [--prompts 32] [--batch-sizes 8,16,32]
"""

from __future__ import annotations

import argparse
import os
import time

import obliviate

obliviate.tune_memory()  # before torch is imported: PyTorch reads its allocator settings once

import torch  # noqa: E402

from obliviate.data.formatting import prompt_text
from obliviate.models.generation import generate, stop_token_ids
from obliviate.models.hardware import cpu_name, measure_matmul_gflops
from obliviate.models.loading import load_model_and_tokenizer

TOPICS = [
    "the water cycle", "how vaccines work", "the French revolution", "black holes", "compound interest",
    "photosynthesis", "the rules of chess", "how a bicycle gear works", "the history of the internet",
    "why the sky is blue", "how to bake bread", "the causes of inflation", "plate tectonics",
    "how airplanes fly", "the immune system", "recycling plastic",
]
SHAPES = [
    "What is {}?",
    "Explain {} to a ten-year-old.",
    "Write a short paragraph about {}, mentioning at least two surprising facts and one common misconception.",
    "I am preparing a presentation for my colleagues next week and I would like a clear, friendly "
    "introduction to {}. Please keep it short, avoid jargon and end with a question for the audience.",
]


def build_prompts(count: int) -> list[str]:
    return [SHAPES[i % len(SHAPES)].format(TOPICS[i % len(TOPICS)]) for i in range(count)]


def answer_tokens(tokenizer, answers: list[str]) -> int:
    return sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)


def loop_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    """The baseline: plain model.generate on one unpadded prompt at a time."""
    stops = stop_token_ids(tokenizer)
    answers, produced = [], 0
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                do_sample=False, eos_token_id=stops, pad_token_id=stops[0],
            )[0, ids.shape[1]:].tolist()
            produced += len(out)
            for i, token in enumerate(out):
                if token in stops:
                    out = out[:i]
                    break
            answers.append(tokenizer.decode(out, skip_special_tokens=True).strip())
    return answers, produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the default model)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model)
    prompts = build_prompts(args.prompts)
    lengths = [len(tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"]) for p in prompts]
    gflops = measure_matmul_gflops(torch.float32)
    generate(model, tokenizer, prompts[:2], max_new_tokens=4)  # warm-up (allocations, kernels)

    rows = []
    start = time.perf_counter()
    reference, produced = loop_generate(model, tokenizer, prompts, args.new_tokens)
    loop_seconds = time.perf_counter() - start
    useful = answer_tokens(tokenizer, reference)
    rows.append(("one prompt at a time (model.generate loop)", 1, loop_seconds, useful, len(prompts)))
    matches = {}
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        start = time.perf_counter()
        answers = generate(model, tokenizer, prompts, max_new_tokens=args.new_tokens, batch_size=batch_size)
        seconds = time.perf_counter() - start
        rows.append(("obliviate.models.generation.generate", batch_size, seconds, answer_tokens(tokenizer, answers), len(prompts)))
        matches[batch_size] = sum(a == b for a, b in zip(answers, reference))

    print(f"CPU: {cpu_name()}, torch threads {args.threads}, fp32 matmul peak {gflops:.0f} GFLOP/s, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end "
          "(other processes on the machine slow both sides)")
    print(f"{len(prompts)} prompts of {min(lengths)}-{max(lengths)} prompt tokens, greedy, "
          f"up to {args.new_tokens} new tokens; {useful} answer tokens in the reference loop "
          f"({produced} generated incl. stop tokens)\n")
    print("| method | batch | seconds | answer tokens/s | prompts/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, batch, seconds, tokens, count in rows:
        print(f"| {name} | {batch} | {seconds:.1f} | {tokens / seconds:.1f} | {count / seconds:.2f} | "
              f"{loop_seconds / seconds:.1f}x |")
    print()
    for batch_size, same in matches.items():
        print(f"batch {batch_size}: {same}/{len(prompts)} answers identical to the loop's")


if __name__ == "__main__":
    main()
