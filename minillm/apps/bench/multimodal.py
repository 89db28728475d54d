"""``minillm bench multimodal``: CLIP and a prefix captioner on real digits and generated
shapes, every number beside its baseline.

* **digits** (UCI handwritten digits, 8x8, :func:`minillm.datasets.vision.digits`): a CLIP
  (ViT on 2x2 patches + a character Transformer) trained on (image, caption) pairs whose
  captions are several English and Chinese wordings of the label. Zero-shot test accuracy by
  the prompts "a photo of the digit d" and "数字 d" (chance 0.1), beside a nearest-centroid
  classifier on the raw pixels (the linear-probe baseline) and on CLIP's image features;
  retrieval recall@1 between the test images and the ten prompts.
* **shapes** (generated 18x18 coloured shapes, :func:`minillm.datasets.vision.shapes`): a
  CLIP trained on the seen shape-colour pairs, captions in both languages. Retrieval
  recall@1 on the test images against all 108 captions (chance 1/108); compositional
  generalisation on the ``heldout`` images, whose three shape-colour pairs never occur in
  training: zero-shot among the held-out captions (27 candidates) and among all 108.
* **captioner**: the shapes CLIP's image encoder (frozen), a linear projection and a small
  GPT first trained as a language model on the training captions (behind an all-zero
  prefix, at the positions they keep behind an image); then, LLaVA's two stages,
  the projection alone and the projection with the GPT. Greedy captions scored by exact
  match and per attribute (shape, colour, position) on the test and held-out images, beside
  the caption of the nearest training image in pixels and chance (1/3, 1/4, 1/9).
"""
from __future__ import annotations

import time

import numpy as np

from ... import datasets as D
from ... import multimodal as M
from ...autograd import tensor
from ...backend import manual_seed
from ...datasets import vision as V
from ...models import CLIP, GPT, CLIPConfig, GPTConfig, PrefixCaptioner
from .quality import _finish, _header, _logger, _on

__all__ = ["multimodal", "RECIPE", "FAST", "DIGIT_CAPTIONS", "markdown_table"]

RECIPE = dict(width=64, layers=2, heads=4, batch_size=64, lr=1e-3, digits_steps=1000,
              shapes_steps=1000, lm_steps=300, stage1_steps=300, stage2_steps=600, stage1_lr=1e-3,
              caption_lang="en", digits_train=None, digits_test=None, shapes_n=None)
#: fast mode: tiny towers, a few steps, small subsets (runs in seconds)
FAST = dict(width=16, layers=1, heads=2, batch_size=16, digits_steps=3, shapes_steps=3,
            lm_steps=2, stage1_steps=2, stage2_steps=2, digits_train=100, digits_test=30,
            shapes_n=40)
ANCHOR = {"note": "minillm's own splits and generated set; no published number",
          "target": "digits zero-shot >= 0.90, shapes held-out combinations zero-shot >= 0.80, "
                    "captioner per-attribute accuracy >= 0.90"}
ZH_DIGITS = "零一二三四五六七八九"
#: the captions a digit d is trained with (English and Chinese wordings; the two prompts
#: scored zero-shot are among them, as CLIP's prompts are among its web captions' forms)
DIGIT_CAPTIONS = (lambda d: f"a photo of the digit {d}",
                  lambda d: f"a handwritten {V.DIGIT_WORDS[d]}",
                  lambda d: f"the number {d}", lambda d: f"数字 {d}",
                  lambda d: f"手写的数字{ZH_DIGITS[d]}")
PROMPTS = {"en": DIGIT_CAPTIONS[0], "zh": DIGIT_CAPTIONS[3]}


def _stack(examples, n=None):
    examples = list(examples)[:n]
    return np.stack([e["image"] for e in examples]), examples


def _clip(s, tokenizer, image_size, patch_size, channels):
    w = s["width"]
    return CLIP(CLIPConfig(image_size, patch_size, channels, s["layers"], s["heads"], w,
                           tokenizer.vocab_size, 40, s["layers"], s["heads"], w, w))


def _row(task, metric, model, value, baseline, baseline_value):
    return {"task": task, "metric": metric, "model": model, "value": float(value),
            "baseline": baseline, "baseline_value": float(baseline_value)}


def _digits(s, seed, progress, say):
    """Rows of the digits part (CLIP zero-shot and retrieval, nearest centroids)."""
    X, train = _stack(D.load("digits", "train", seed=seed), s["digits_train"])
    Xt, test = _stack(D.load("digits", "test", seed=seed), s["digits_test"])
    y, yt = np.array([e["label"] for e in train]), np.array([e["label"] for e in test])
    captions = [[f(d) for f in DIGIT_CAPTIONS] for d in y]
    tok = M.caption_tokenizer([c for d in range(10) for c in (f(d) for f in DIGIT_CAPTIONS)])
    manual_seed(seed)
    model = _clip(s, tok, 8, 2, 1)
    say(f"digits: {len(X)} train / {len(Xt)} test images; CLIP {model.num_parameters():,} "
        f"parameters, {s['digits_steps']} steps")
    hist = M.train_clip(model, X, captions, tok, s["digits_steps"], s["batch_size"], s["lr"],
                        seed=seed, progress=progress, log=say)
    pixels = np.mean(M.nearest_centroid_predict(X, y, Xt) == yt)
    feats = np.mean(M.nearest_centroid_predict(M.embed_images(model, X), y,
                                               M.embed_images(model, Xt)) == yt)
    rows = [_row("digits", "test accuracy", "nearest centroid, CLIP image features", feats,
                 "nearest centroid, raw pixels", pixels)]
    for lang, prompt in PROMPTS.items():
        texts = [prompt(d) for d in range(10)]
        pred = M.zero_shot_predict(model, tok, Xt, texts)
        rows.append(_row("digits", f"zero-shot test accuracy ({lang} prompt)", "CLIP",
                         np.mean(pred == yt), "chance", 0.1))
        r = M.retrieval_recall_at_1(M.embed_images(model, Xt), [prompt(d) for d in yt],
                                    M.embed_texts(model, tok, texts), texts)
        for way in ("image_to_text", "text_to_image"):
            rows.append(_row("digits", f"recall@1 {way.replace('_', ' ')} ({lang})", "CLIP",
                             r[way], "chance", r["chance_" + way]))
    return rows, hist


def _shapes_clip(s, data, tok, seed, progress, say):
    """The shapes CLIP and its rows: retrieval on test, held-out combinations zero-shot."""
    X, train = data["train"]
    captions = [[e["caption_en"], e["caption_zh"]] for e in train]
    manual_seed(seed)
    model = _clip(s, tok, V.IMAGE_SIZE, V.CELL, 3)
    say(f"shapes: {len(X)} train images (held out: "
        f"{', '.join(f'{c} {sh}' for sh, c in V.HELD_OUT)}); CLIP {s['shapes_steps']} steps")
    hist = M.train_clip(model, X, captions, tok, s["shapes_steps"], s["batch_size"], s["lr"],
                        seed=seed, progress=progress, log=say)
    rows = []
    for lang in ("en", "zh"):
        everything = list(V.all_captions(lang))
        held = list(V.all_captions(lang, V.HELD_OUT))
        for split, texts, what in (("test", everything, "all 108 captions"),
                                   ("heldout", held, "27 held-out captions"),
                                   ("heldout", everything, "all 108 captions")):
            Xs, ex = data[split]
            r = M.retrieval_recall_at_1(M.embed_images(model, Xs),
                                        [e[f"caption_{lang}"] for e in ex],
                                        M.embed_texts(model, tok, texts), texts)
            task = "shapes" if split == "test" else "shapes, held-out pairs"
            for way in ("image_to_text", "text_to_image"):
                rows.append(_row(task, f"recall@1 {way.replace('_', ' ')} ({lang}, {what})",
                                 "CLIP", r[way], "chance", r["chance_" + way]))
    return model, rows, hist


def _captioner(s, data, visual, seed, progress, say):
    """Rows of the prefix captioner (after stage 1 and stage 2) and its baselines."""
    lang = s["caption_lang"]
    key = f"caption_{lang}"
    X, train = data["train"]
    tok = M.caption_tokenizer(V.all_captions(lang))
    longest = max(len(c) for c in V.all_captions(lang)) + 2
    manual_seed(seed)
    gpt = GPT(GPTConfig(tok.vocab_size, visual.config.num_patches + 1 + longest, s["layers"],
                        s["heads"], s["width"]))
    cap = PrefixCaptioner(visual, gpt)
    texts = [e[key] for e in train]

    def lm_loss(idx):               # text only: an all-zero prefix (see PrefixCaptioner)
        return cap(None, *M.caption_lm_batch(tok, [texts[i] for i in idx]))[1]

    def caption_loss(idx):
        return cap(tensor(X[idx]), *M.caption_lm_batch(tok, [texts[i] for i in idx]))[1]

    say(f"captioner ({lang}): GPT {gpt.num_parameters():,} parameters; {s['lm_steps']} LM "
        f"steps, {s['stage1_steps']} projection steps, {s['stage2_steps']} end-to-end steps")
    hist = {"lm": M.train_captioner(lm_loss, gpt.parameters(), s["lm_steps"], len(X),
                                    s["batch_size"], s["lr"], seed, progress, "caption LM")}
    rows, samples = [], {}
    for stage in (1, 2):
        cap.set_stage(stage).train()
        params = [p for p in cap.parameters() if p.requires_grad]
        hist[f"stage{stage}"] = M.train_captioner(caption_loss, params,
                                                  s[f"stage{stage}_steps"], len(X),
                                                  s["batch_size"],
                                                  s["stage1_lr"] if stage == 1 else s["lr"],
                                                  seed + stage,
                                                  progress, f"stage {stage}")
        for split in ("test", "heldout"):
            Xs, ex = data[split]
            pred = M.generate_captions(cap, tok, Xs, longest)
            samples[split] = pred
            rows += _caption_rows(split, f"prefix captioner, stage {stage}", pred, ex, X,
                                  train, lang)
    return rows, hist, samples


def _caption_rows(split, model, pred, examples, X, train, lang):
    Xs = np.stack([e["image"] for e in examples])
    nn = [train[i][f"caption_{lang}"] for i in M.nearest_neighbour(X, Xs)]
    got, base = M.caption_metrics(pred, examples, lang), M.caption_metrics(nn, examples, lang)
    chance = {"exact_match": 1 / 108, "shape": 1 / 3, "colour": 1 / 4, "position": 1 / 9}
    task = "captions" if split == "test" else "captions, held-out pairs"
    rows = []
    for metric in ("exact_match", "shape", "colour", "position"):
        rows.append(_row(task, f"{metric.replace('_', ' ')} ({lang})", model, got[metric],
                         "nearest training image (pixels)", base[metric]))
        rows[-1]["chance"] = chance[metric]
    return rows


def markdown_table(rows):
    """One line per number: task, metric, model and value, baseline and its value."""
    lines = ["| task | metric | model | value | baseline | baseline value |",
             "|---|---|---|---:|---|---:|"]
    lines += [f"| {r['task']} | {r['metric']} | {r['model']} | {r['value']:.3f} | "
              f"{r['baseline']} | {r['baseline_value']:.3f} |" for r in rows]
    return "\n".join(lines)


def _plot(data, model, tok, samples, lang, path, k=6):
    """A few held-out and test images with the caption CLIP retrieves (all 108) and the
    captioner's caption."""
    texts = list(V.all_captions("en"))
    text_emb = M.embed_texts(model, tok, texts)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    fig = Figure(figsize=(2.6 * k, 6.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, k)
    for j, split in enumerate(("test", "heldout")):
        Xs, ex = data[split]
        top = (M.embed_images(model, Xs[:k]) @ text_emb.T).argmax(1)
        for i in range(k):
            ax = axes[j, i]
            ax.set_axis_off()
            if i >= len(ex):
                continue
            ax.imshow(Xs[i])
            said = samples[split][i] if lang == "en" else "(Chinese, in results.json)"
            ax.set_title(f"{split}: {ex[i]['caption_en']}\n"
                         f"CLIP (top 1 of 108): {texts[top[i]]}\ncaptioner: {said}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def multimodal(device=None, seed=0, fast=False, progress=True, output_dir=None, log=print):
    """Run the benchmark (see the module docstring). Returns keys ``rows`` (``[{task,
    metric, model, value, baseline, baseline_value}]``), ``table`` (Markdown), ``history``
    (the training losses), ``held_out`` (the shape-colour pairs never trained on),
    ``total_seconds``, plus the common keys."""
    say = _logger(log)
    t0 = time.perf_counter()
    s = dict(RECIPE, **(FAST if fast else {}))
    with _on(device) as dev:
        digit_rows, hist_digits = _digits(s, seed, progress, say)
        data = {split: _stack(D.load("shapes", split, n=s["shapes_n"], seed=seed))
                for split in ("train", "test", "heldout")}
        tok = M.caption_tokenizer(list(V.all_captions("en")) + list(V.all_captions("zh")))
        model, shape_rows, hist_shapes = _shapes_clip(s, data, tok, seed, progress, say)
        cap_rows, hist_cap, samples = _captioner(s, data, model.visual, seed, progress, say)
    rows = digit_rows + shape_rows + cap_rows
    result = _header("multimodal", dev, seed, fast, s, ANCHOR)
    result.update(rows=rows, table=markdown_table(rows),
                  history={"clip_digits": hist_digits, "clip_shapes": hist_shapes, **hist_cap},
                  held_out=[list(p) for p in V.HELD_OUT], samples=samples,
                  total_seconds=time.perf_counter() - t0)
    say(result["table"])
    return _finish(result, output_dir,
                   lambda path: _plot(data, model, tok, samples, s["caption_lang"], path), log)
