"""Benchmarks (``minillm bench <name>``): published recipes re-run with minillm, and speed.

    from minillm import bench
    result = bench.shakespeare_gpt(output_dir="runs/bench/shakespeare-gpt")
    print(bench.format_result("shakespeare-gpt", result))

    result = bench.bench_gpt(compare="torch")          # minillm beside PyTorch eager
    print(bench.format_speed("gpt", result))

:mod:`minillm.bench.quality` holds the quality benchmarks (nanoGPT's Shakespeare GPT, the
Zaremba PTB LSTM, Kneser-Ney n-grams on PTB, the Chinese sentiment table). Their numbers are
recorded in README with the command that reproduces them; they are not timed tests.

:mod:`minillm.bench.speed` holds the speed benchmarks (``gpt``, ``lstm``, ``ops``): ms per
training step, tokens/s and MFU of minillm, optionally beside a PyTorch eager reference that
starts from the same weights and trains on the same batches.
"""
from .quality import (BENCHMARKS, Benchmark, format_result, nanogpt_lr, ptb_lstm, ptb_ngram,
                      run_benchmark, sentiment, shakespeare_gpt, zaremba_lr)
from .methods import sentiment_methods
from .speed import (SPEED_BENCHMARKS, SpeedBenchmark, bench_gpt, bench_lstm, bench_ops,
                    format_speed, matmul_peak)

BENCHMARKS["sentiment-methods"] = Benchmark(
    sentiment_methods, "chinese_reviews: full / head-only / frozen / LLRD / LoRA fine-tuning, "
    "distillation, pruning, int8, cloze and in-context prompting")

__all__ = ["BENCHMARKS", "Benchmark", "format_result", "run_benchmark", "shakespeare_gpt",
           "ptb_lstm", "ptb_ngram", "sentiment", "sentiment_methods", "nanogpt_lr", "zaremba_lr",
           "SPEED_BENCHMARKS", "SpeedBenchmark", "bench_gpt", "bench_lstm", "bench_ops",
           "format_speed", "matmul_peak"]
