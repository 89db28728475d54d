"""Training and evaluating the vision-language models of :mod:`minillm.models`.

* :func:`train_clip` -- CLIP on (image, caption) pairs, one caption drawn per image and step
  from its list (several wordings, two languages);
* :func:`zero_shot_predict` -- a class per image: the nearest text prompt, no classifier;
* :func:`retrieval_recall_at_1` -- image -> text and text -> image retrieval, a hit when the
  retrieved item carries the query's caption;
* :func:`train_captioner` / :func:`caption_metrics` -- the prefix captioner's stages and its
  exact match and per-attribute accuracy;
* baselines: :func:`nearest_centroid_predict` (raw pixels) and :func:`nearest_neighbour`.

Images are NumPy arrays ``(n, H, W[, C])``; texts go through a character tokenizer
(:func:`caption_tokenizer`). Tensors are made on the default device.
"""
from __future__ import annotations

import numpy as np

from .autograd import no_grad, tensor
from .data import WordTokenizer
from .models.clip import clip_loss
from .optim import AdamW, clip_grad_norm_
from .training.trainer import progress_bar

__all__ = ["caption_tokenizer", "encode_texts", "train_clip", "embed_images", "embed_texts",
           "zero_shot_predict", "retrieval_recall_at_1", "nearest_centroid_predict",
           "nearest_neighbour", "train_captioner", "generate_captions", "caption_metrics",
           "caption_lm_batch"]


def caption_tokenizer(texts):
    """A word tokenizer of every word in ``texts`` (with <pad> <unk> <bos> <eos>): English
    words (``" red"``), Chinese cut by the People's Daily word list (``红色``, ``圆形``).

    Words, not characters: the text tower mean-pools its tokens, and with characters the
    English colour and shape were a few letters among about 25, so a held-out pair such as
    "a yellow circle" was read mostly from the letters it shares with seen captions."""
    return WordTokenizer.train(list(texts))


def encode_texts(tokenizer, texts, add_special_tokens=False):
    """``(ids, attention_mask)`` int64 Tensors ``(n, longest)``, padded on the right."""
    batch = tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens,
                                   return_tensors="np")
    return tensor(batch["input_ids"]), tensor(batch["attention_mask"])


def _batches(n, batch_size):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def train_clip(model, images, captions, tokenizer, steps, batch_size=64, lr=1e-3,
               weight_decay=0.1, seed=0, progress=False, log=None):
    """Train ``model`` (a CLIP) for ``steps`` steps of AdamW on random batches; image ``i``
    is paired with one of ``captions[i]`` (a list of wordings) drawn at random each time.
    Returns the loss of every step (a list)."""
    rng = np.random.default_rng(seed)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                weight_decay=weight_decay)
    model.train()
    losses, bar = [], progress_bar(steps, "clip", disable=not progress)
    for _ in range(steps):
        idx = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in idx]
        ids, mask = encode_texts(tokenizer, texts)
        loss = clip_loss(model(tensor(images[idx]), ids, mask))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.update(1)
    bar.close()
    model.eval()
    if log is not None:
        log(f"  clip: {steps} steps, loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")
    return losses


@no_grad()
def embed_images(model, images, batch_size=256):
    """Unit image embeddings ``(n, embed_dim)`` as a NumPy array."""
    return np.concatenate([model.encode_image(tensor(images[s])).numpy()
                           for s in _batches(len(images), batch_size)])


@no_grad()
def embed_texts(model, tokenizer, texts, batch_size=256):
    """Unit text embeddings ``(n, embed_dim)`` as a NumPy array."""
    texts = list(texts)
    return np.concatenate([model.encode_text(*encode_texts(tokenizer, texts[s])).numpy()
                           for s in _batches(len(texts), batch_size)])


def zero_shot_predict(model, tokenizer, images, prompts):
    """For each image the index of the nearest of ``prompts`` (one text per class)."""
    return (embed_images(model, images) @ embed_texts(model, tokenizer, prompts).T).argmax(1)


def retrieval_recall_at_1(image_emb, image_captions, text_emb, texts):
    """Recall@1 both ways between images (with their captions) and distinct ``texts``.

    image -> text: the nearest text is the image's caption. text -> image: the nearest image
    carries the text as its caption (each text that some image carries is one query).
    Returns ``{"image_to_text", "text_to_image", "chance_image_to_text",
    "chance_text_to_image"}``."""
    sim = image_emb @ text_emb.T                               # (images, texts)
    texts = list(texts)
    target = np.array([texts.index(c) for c in image_captions])
    i2t = float(np.mean(sim.argmax(1) == target))
    queries = sorted(set(target.tolist()))
    best = sim[:, queries].argmax(0)                          # the top image per query text
    t2i = float(np.mean(target[best] == np.array(queries)))
    share = np.bincount(target, minlength=len(texts))[queries] / len(target)
    return {"image_to_text": i2t, "text_to_image": t2i, "chance_image_to_text": 1 / len(texts),
            "chance_text_to_image": float(share.mean())}


def nearest_centroid_predict(train_x, train_y, test_x):
    """The class whose mean training vector is nearest (Euclidean) to each test vector."""
    train_x = train_x.reshape(len(train_x), -1)
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    return classes[nearest_neighbour(centroids, test_x)]


def nearest_neighbour(train_x, test_x):
    """Index of the nearest (Euclidean) training vector for each test vector."""
    train_x = train_x.reshape(len(train_x), -1)
    test_x = test_x.reshape(len(test_x), -1)
    d = (test_x ** 2).sum(1)[:, None] - 2 * test_x @ train_x.T + (train_x ** 2).sum(1)
    return d.argmin(1)


def caption_lm_batch(tokenizer, texts):
    """``(inputs, targets)`` for next-token training: ``<bos> c_1 .. c_n`` -> ``c_1 .. c_n
    <eos>``, padding targets -100."""
    rows = [[tokenizer.bos_id] + tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    width = max(len(r) for r in rows) - 1
    inputs = np.full((len(rows), width), tokenizer.pad_id, dtype=np.int64)
    targets = np.full((len(rows), width), -100, dtype=np.int64)
    for i, r in enumerate(rows):
        inputs[i, :len(r) - 1] = r[:-1]
        targets[i, :len(r) - 1] = r[1:]
    return tensor(inputs), tensor(targets)


def train_captioner(step_loss, params, steps, n, batch_size=64, lr=1e-3, seed=0,
                    progress=False, desc="captioner"):
    """``steps`` AdamW steps on ``params``; ``step_loss(idx)`` returns the loss of the
    examples ``idx`` (random batches of ``range(n)``). Returns the losses."""
    rng = np.random.default_rng(seed)
    opt = AdamW(list(params), lr=lr, weight_decay=0.0)
    losses, bar = [], progress_bar(steps, desc, disable=not progress)
    for _ in range(steps):
        loss = step_loss(rng.choice(n, size=min(batch_size, n), replace=False))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(opt.param_groups[0]["params"], 1.0)
        opt.step()
        losses.append(loss.item())
        bar.update(1)
    bar.close()
    return losses


def generate_captions(captioner, tokenizer, images, max_new_tokens, batch_size=256):
    """Greedy captions of ``images`` (text cut at the first <eos>)."""
    captioner.eval()
    out = []
    for s in _batches(len(images), batch_size):
        ids = captioner.generate(tensor(images[s]), tokenizer.bos_id, max_new_tokens).numpy()
        for row in ids.tolist():
            row = row[:row.index(tokenizer.eos_id)] if tokenizer.eos_id in row else row
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


def caption_metrics(predicted, examples, lang="en"):
    """Exact match of the captions and accuracy of each attribute (shape, colour, position)
    that :func:`minillm.datasets.vision.parse_caption` reads from the predictions."""
    from .datasets.vision import parse_caption  # noqa: PLC0415
    key = f"caption_{lang}"
    out = {"exact_match": float(np.mean([p == e[key] for p, e in zip(predicted, examples)]))}
    parsed = [parse_caption(p, lang) for p in predicted]
    for attr in ("shape", "colour", "position"):
        out[attr] = float(np.mean([q[attr] == e[attr] for q, e in zip(parsed, examples)]))
    return out
