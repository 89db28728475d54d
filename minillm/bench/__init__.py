"""Benchmarks (``minillm bench <name>``): published recipes re-run with minillm.

    from minillm import bench
    result = bench.shakespeare_gpt(output_dir="runs/bench/shakespeare-gpt")
    print(bench.format_result("shakespeare-gpt", result))

:mod:`minillm.bench.quality` holds the quality benchmarks (nanoGPT's Shakespeare GPT, the
Zaremba PTB LSTM, Kneser-Ney n-grams on PTB, the Chinese sentiment table). Their numbers are
recorded in README with the command that reproduces them; they are not timed tests.
"""
from .quality import (BENCHMARKS, Benchmark, format_result, nanogpt_lr, ptb_lstm, ptb_ngram,
                      run_benchmark, sentiment, shakespeare_gpt, zaremba_lr)

__all__ = ["BENCHMARKS", "Benchmark", "format_result", "run_benchmark", "shakespeare_gpt",
           "ptb_lstm", "ptb_ngram", "sentiment", "nanogpt_lr", "zaremba_lr"]
