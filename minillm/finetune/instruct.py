"""Instruction tuning: a chat template, the response-only loss mask, and greedy answers.

Supervised instruction fine-tuning (SFT; InstructGPT, Ouyang et al. 2022; Alpaca) trains a
pretrained GPT on conversations. Each example is rendered as text by a :class:`ChatTemplate`,

    用户：{instruction}            <- a user turn (with "输入：{input}" on its own line if any)
    助手：{response}<eos>          <- the assistant turn, closed by the tokenizer's eos id

and the language-model loss is taken on the **response tokens only**: the target of every
position that predicts a prompt token is ``-100`` (ignored by ``F.cross_entropy``), so the model
is taught to answer, not to imitate questions. For ids ``s_0 .. s_n`` the model reads
``x = s_0 .. s_{n-1}`` and predicts ``y_t = s_{t+1}`` where ``s_{t+1}`` belongs to a response
(its eos included), ``y_t = -100`` elsewhere.

The template is plain text (no new special tokens), so a pretrained model's vocabulary works as
it is; only the eos id ends a turn, and the answer of a generation is what comes before it.
It is saved as ``chat_template.json`` beside the tokenizer in a model directory.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

IGNORE = -100
TEMPLATE_FILE = "chat_template.json"
ROLES = ("system", "user", "assistant")


class TemplateError(ValueError):
    """A conversation or a template file the template cannot use (the message says why)."""


@dataclass(frozen=True)
class ChatTemplate:
    """How messages become text. Each turn is ``prefix + content + separator``; an
    assistant turn is ``assistant + content`` followed by the eos id instead."""

    system: str = "系统："
    user: str = "用户："
    input: str = "输入："
    assistant: str = "助手："
    separator: str = "\n"
    name: str = "minillm-chat-v1"

    def user_text(self, instruction: str, input: str = "") -> str:
        """The content of the user turn for an Alpaca record (instruction, optional input)."""
        return instruction + (f"{self.separator}{self.input}{input}" if input else "")

    def prompt(self, messages) -> str:
        """The text that asks for the next assistant turn: every earlier turn, then the
        assistant prefix (earlier assistant turns end with eos, which is not text: use
        :func:`encode_conversation` to get ids)."""
        return "".join(text for text, _ in self.pieces(messages)) + self.assistant

    def pieces(self, messages):
        """``[(text, is_response)]`` for ``messages``; responses end where eos goes."""
        out = []
        for m in check_messages(messages, final_assistant=False):
            if m["role"] == "assistant":
                out += [(self.assistant, False), (m["content"], True)]
            else:
                prefix = self.system if m["role"] == "system" else self.user
                out.append((prefix + m["content"] + self.separator, False))
        return out

    def save(self, directory) -> Path:
        path = Path(directory) / TEMPLATE_FILE
        path.write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory) -> "ChatTemplate":
        path = Path(directory) / TEMPLATE_FILE
        if not path.is_file():
            raise TemplateError(f"{path} not found: {directory} is not an instruction-tuned "
                                "model (train one with `minillm finetune --task instruct`)")
        data = json.loads(path.read_text(encoding="utf-8"))
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown or not all(isinstance(v, str) for v in data.values()):
            raise TemplateError(f"{path}: fields must be strings among "
                                f"{sorted(cls.__dataclass_fields__)}, got {sorted(data)}")
        return cls(**data)


def check_messages(messages, final_assistant=True):
    """The messages, checked: an optional first system turn, then user and assistant
    turns alternating, starting with a user turn (and, when ``final_assistant``, ending with
    an assistant turn). Each is ``{"role", "content"}`` with a string content."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TemplateError("a conversation is a non-empty list of {'role', 'content'} messages")
    expected = "user"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                m.get("role") not in ROLES:
            raise TemplateError(f"message {i} must be {{'role': one of {ROLES}, 'content': "
                                f"str}}, got {m!r}"[:200])
        if m["role"] == "system" and i == 0:
            continue
        if m["role"] != expected:
            raise TemplateError(f"message {i} has role {m['role']!r}, expected {expected!r} "
                                "(user and assistant turns alternate, system only first)")
        expected = "assistant" if expected == "user" else "user"
    if final_assistant and messages[-1]["role"] != "assistant":
        raise TemplateError("the conversation must end with an assistant message (the answer "
                            "the model learns)")
    return messages


def record_messages(template: ChatTemplate, record) -> list[dict]:
    """An Alpaca record ``{"instruction", "input", "output"}`` as two messages."""
    return [{"role": "user", "content": template.user_text(record["instruction"],
                                                           record.get("input", ""))},
            {"role": "assistant", "content": record["output"]}]


def encode_conversation(tok, template: ChatTemplate, messages):
    """``(ids, labels)`` of one conversation, both lists of ints of the same length:
    ``labels[i] = ids[i]`` for response tokens and the eos after each response, ``-100`` for
    every prompt token. Needs a tokenizer with an eos token."""
    if tok.eos_id is None:
        raise TemplateError("instruction tuning needs a tokenizer with an eos token (it ends "
                            "each answer)")
    ids, labels = [], []
    for text, is_response in template.pieces(check_messages(messages)):
        piece = tok.encode(text)
        ids += piece
        labels += piece if is_response else [IGNORE] * len(piece)
        if is_response:
            ids.append(tok.eos_id)
            labels.append(tok.eos_id)
    return ids, labels


def shift_for_lm(ids, labels):
    """``(x, y)`` for next-token training: ``x = ids[:-1]``, ``y = labels[1:]`` (the target
    of position t is token t + 1, ignored unless it is part of a response)."""
    return list(ids[:-1]), list(labels[1:])


def pad_batch(rows, pad_id):
    """Right-pad ``[(x, y)]`` into int64 arrays ``(B, T)``: ``x`` with ``pad_id``, ``y`` with
    ``-100`` (padding is never a target; with causal attention it never changes the
    positions before it)."""
    width = max(len(x) for x, _ in rows)
    xs = np.full((len(rows), width), pad_id, dtype=np.int64)
    ys = np.full((len(rows), width), IGNORE, dtype=np.int64)
    for i, (x, y) in enumerate(rows):
        xs[i, :len(x)] = x
        ys[i, :len(y)] = y
    return xs, ys


def exact_match(prediction: str, reference: str) -> bool:
    """Exact match after stripping surrounding whitespace."""
    return prediction.strip() == reference.strip()


# -- data for training ---------------------------------------------------------------------------
def encode_records(tok, template: ChatTemplate, records, block_size: int, where="records"):
    """``[{"x", "y"}]`` for next-token SFT: each record (Alpaca dict) or conversation
    (``{"messages": [...]}``) encoded by :func:`encode_conversation` and shifted. A record
    whose ids exceed ``block_size + 1`` is an error naming it (nothing is silently cut)."""
    out, too_long = [], []
    for i, r in enumerate(records):
        messages = r["messages"] if "messages" in r else record_messages(template, r)
        ids, labels = encode_conversation(tok, template, messages)
        if len(ids) > block_size + 1:
            too_long.append((i, len(ids)))
            continue
        x, y = shift_for_lm(ids, labels)
        out.append({"x": x, "y": y})
    if too_long:
        i, n = too_long[0]
        raise TemplateError(f"{len(too_long)} of {len(records)} {where} are longer than the "
                            f"model's block_size={block_size} tokens (first: record {i}, {n} "
                            "tokens); shorten them or use a model with a larger block_size")
    return out


class SFTCollator:
    """``[{"x", "y"}]`` -> ``{"ids", "targets"}`` int64 tensors, right-padded (the GPT batch
    contract of :class:`~minillm.training.Trainer`)."""

    def __init__(self, pad_id: int, device=None):
        self.pad_id, self.device = pad_id, device

    def __call__(self, examples):
        from ..autograd import tensor
        xs, ys = pad_batch([(e["x"], e["y"]) for e in examples], self.pad_id)
        return {"ids": tensor(xs, device=self.device), "targets": tensor(ys, device=self.device)}


# -- answering -----------------------------------------------------------------------------------
def prompt_ids(tok, template: ChatTemplate, messages) -> list[int]:
    """The ids that ask for the next assistant turn: the history (each earlier answer closed
    by eos) and the assistant prefix. ``messages`` must end with a user turn."""
    check_messages(messages, final_assistant=False)
    if messages[-1]["role"] != "user":
        raise TemplateError("the last message must be the user's turn to be answered")
    ids = []
    for text, is_response in template.pieces(messages):
        ids += tok.encode(text)
        if is_response:
            ids.append(tok.eos_id)
    return ids + tok.encode(template.assistant)


def stream_tokens(model, ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                  eos_id=None, seed=None, slide=False):
    """Yield the ids a GPT-style model samples after ``ids`` (a list), one at a time, with a
    KV cache; ``temperature=0`` is greedy. Stops after ``eos_id`` (not yielded) or
    ``max_new_tokens``, or when the window is full, unless ``slide``.

    ``slide=True`` goes past the window (``block_size``) with a sliding cache: when the
    cache is full, its newest half is re-encoded at positions 0.. into a fresh cache, and
    generation goes on from there. The model then sees between half and all of its window
    as context, and recomputes once per half window instead of once per token (which is what
    :meth:`generate` does past the window). Inside the window nothing changes."""
    from .. import backend
    from ..autograd import no_grad
    from ..models.base import sample_next
    dev = next(iter(model.parameters())).device
    gen = backend.Generator(dev, seed) if seed is not None else backend.generator(dev)
    window = model.config.block_size
    limit = max_new_tokens if slide else min(max_new_tokens, window - len(ids))
    seen, pending = list(ids), list(ids)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = model.init_cache(1)
            for _ in range(limit):
                if cache.offset + len(pending) > window:          # slide: keep the newest half
                    cache, pending = model.init_cache(1), seen[-(window // 2):]
                logits, cache = model.forward_step(_ids(pending, dev), cache)
                nxt = sample_next(dev.xp, logits.data[:, -1, :], gen, temperature or 1.0,
                                  top_k, top_p, do_sample=temperature > 0)
                token = int(backend.to_host(nxt)[0])
                if token == eos_id:
                    return
                yield token
                seen.append(token)
                pending = [token]
    finally:
        model.train(was_training)


def _ids(ids, device):
    from ..autograd import tensor
    return tensor(np.asarray([ids], dtype=np.int64), device=device)


def answer(model, tok, template: ChatTemplate, messages, max_new_tokens=64, **sampling) -> str:
    """The model's next assistant turn for ``messages`` (greedy unless ``temperature``)."""
    ids = prompt_ids(tok, template, messages)
    if len(ids) >= model.config.block_size:
        raise TemplateError(f"the prompt has {len(ids)} tokens, the model's window is "
                            f"{model.config.block_size}: shorten it")
    return tok.decode(list(stream_tokens(model, ids, max_new_tokens, eos_id=tok.eos_id,
                                         **sampling)))


def evaluate_records(model, tok, template: ChatTemplate, records, max_new_tokens=64,
                     progress=False) -> dict:
    """Greedy answers to Alpaca records: ``{"exact_match", "n", "per_task": {task: {...}},
    "predictions": [...]}``; records without a ``task`` count under ``"all"`` only."""
    from tqdm import tqdm                   # not tqdm.auto: no widget warning in notebooks
    preds = []
    for r in tqdm(records, desc="answering", unit="record", disable=not progress):
        user = [{"role": "user", "content": template.user_text(r["instruction"],
                                                             r.get("input", ""))}]
        pred = answer(model, tok, template, user, max_new_tokens)
        preds.append({"prediction": pred, "reference": r["output"],
                      "correct": exact_match(pred, r["output"]),
                      **({"task": r["task"]} if "task" in r else {})})
    return {**exact_match_scores([(p.get("task"), p["correct"]) for p in preds]),
            "predictions": preds}


def exact_match_scores(outcomes) -> dict:
    """``{"exact_match", "n", "per_task": {task: {"exact_match", "n"}}}`` of ``(task,
    correct)`` pairs; a ``None`` task counts in the overall score only."""
    per, n_all, k_all = {}, 0, 0
    for task, correct in outcomes:
        n_all, k_all = n_all + 1, k_all + bool(correct)
        if task is not None:
            n, k = per.get(task, (0, 0))
            per[task] = (n + 1, k + bool(correct))
    return {"exact_match": k_all / n_all if n_all else float("nan"), "n": n_all,
            "per_task": {t: {"exact_match": k / n, "n": n} for t, (n, k) in sorted(per.items())}}
