"""Benchmarks (``minillm bench <name>``): published recipes re-run with minillm, and speed.

    from minillm.apps import bench
    result = bench.shakespeare_gpt(output_dir="runs/bench/shakespeare-gpt")
    print(bench.format_result("shakespeare-gpt", result))

    result = bench.bench_gpt(compare="torch")          # minillm beside PyTorch eager
    print(bench.format_speed("gpt", result))

:mod:`minillm.apps.bench.quality` holds the quality benchmarks (nanoGPT's Shakespeare GPT, the
Zaremba PTB LSTM, Kneser-Ney n-grams on PTB, the Chinese sentiment table). Their numbers are
recorded in BENCHMARKS.md with the command that reproduces them; they are not timed tests.

:mod:`minillm.apps.bench.speed` holds the speed benchmarks (``gpt``, ``lstm``, ``ops``): ms per
training step, tokens/s and MFU of minillm, optionally beside a PyTorch eager reference that
starts from the same weights and trains on the same batches.
"""
from .quality import (BENCHMARKS, Benchmark, format_result, nanogpt_lr, ptb_lstm, ptb_ngram,
                      run_benchmark, sentiment, shakespeare_gpt, zaremba_lr)
import functools

from .apps import ner, text_classification
from .fewshot import fewshot_intents
from .generation import code_completion, translation
from .instruct import instruct_pipeline
from .load import load_benchmark
from .methods import sentiment_methods
from .multimodal import multimodal
from .payoff import pretraining_payoff
from .prompting import prompting_accuracy
from .qa import kb_qa, open_domain_qa
from .speed import (SPEED_BENCHMARKS, SpeedBenchmark, bench_gpt, bench_lstm, bench_ops,
                    format_speed, matmul_peak)

BENCHMARKS["text-classification"] = Benchmark(
    text_classification, "SST-2 and CLINC150 (in-scope accuracy, out-of-scope recall): "
    "bag-of-words naive Bayes and logistic regression, a BERT fine-tuned from scratch")
BENCHMARKS["ner"] = Benchmark(ner, "People's Daily and WNUT-17 entity F1: a memorising "
                              "baseline and a BERT fine-tuned from scratch")
BENCHMARKS["translation"] = Benchmark(translation, "seq2seq Transformer on the generated dates "
                                       "and zh_numerals sets (exact match, BLEU) beside a "
                                       "nearest-neighbour baseline")
BENCHMARKS["code-completion"] = Benchmark(code_completion, "character GPT on the Python standard "
                                          "library's source (bits/char, line completion) beside "
                                          "Kneser-Ney n-grams")
BENCHMARKS["squad-odqa"] = Benchmark(
    functools.partial(open_domain_qa, dataset="squad_v1.1"), "SQuAD v1.1 (test articles): BM25 "
    "and TF-IDF retrieval, a BERT reader on the gold paragraph and on the top 1 / top 5")
BENCHMARKS["cmrc-odqa"] = Benchmark(
    functools.partial(open_domain_qa, dataset="cmrc2018"), "CMRC 2018 (test articles): "
    "retrieval, then a BERT reader (character-level F1)")
BENCHMARKS["kb-qa"] = Benchmark(kb_qa, "questions over the generated knowledge base: BM25 over "
                                "the facts, then a reader; one-hop and two-hop")
BENCHMARKS["kb-qa-2rounds"] = Benchmark(
    functools.partial(kb_qa, rounds=2), "kb-qa with a second retrieval round that follows each "
    "retrieved fact (for the two-hop questions)")
BENCHMARKS["sentiment-methods"] = Benchmark(
    sentiment_methods, "chinese_reviews: full / head-only / frozen / LLRD / LoRA fine-tuning, "
    "distillation, pruning, int8, cloze and in-context prompting")

BENCHMARKS["pretraining-payoff"] = Benchmark(
    pretraining_payoff, "learning curves: test metric against labelled examples (100 to all) "
    "for a GPT from scratch, pretrained, pretrained + domain-adaptive, and the bag-of-n-grams "
    "baseline")

BENCHMARKS["instruct"] = Benchmark(
    instruct_pipeline, "instruction tuning on the generated instructions set: nearest-neighbour "
    "baseline, the pretrained GPT with 2 demonstrations, SFT from scratch / pretrained, + DPO, "
    "+ GRPO; exact match on seen and held-out wordings, and a report card")

BENCHMARKS["load"] = Benchmark(
    load_benchmark, "loading Hugging Face checkpoints with random weights (GPT-2 small, "
    "BERT-base; --large adds GPT-2 large): seconds and peak memory / weights, each load in a "
    "fresh process, beside transformers")

BENCHMARKS["prompting"] = Benchmark(
    prompting_accuracy, "zero- and few-shot in-context classification with the "
    "pretraining-payoff GPTs, raw and with contextual calibration, against the majority class")

BENCHMARKS["fewshot-intents"] = Benchmark(
    fewshot_intents, "few-shot intents on CLINC150's held-out intents (5-way 1/5-shot, 10-way "
    "5-shot, 95% intervals): prototypical network and Reptile beside bag-of-words centroids "
    "and a linear head")

BENCHMARKS["multimodal"] = Benchmark(
    multimodal, "vision-language: CLIP zero-shot on handwritten digits and retrieval on "
    "generated shapes (held-out shape-colour pairs), a LLaVA-style prefix captioner; beside "
    "nearest-centroid / nearest-neighbour baselines and chance")

__all__ = ["BENCHMARKS", "load_benchmark", "fewshot_intents", "multimodal", "instruct_pipeline", "pretraining_payoff", "prompting_accuracy", "Benchmark", "format_result", "run_benchmark", "shakespeare_gpt",
           "ptb_lstm", "ptb_ngram", "sentiment", "sentiment_methods", "open_domain_qa", "kb_qa",
           "translation", "code_completion", "text_classification", "ner",
           "nanogpt_lr", "zaremba_lr",
           "SPEED_BENCHMARKS", "SpeedBenchmark", "bench_gpt", "bench_lstm", "bench_ops",
           "format_speed", "matmul_peak"]
