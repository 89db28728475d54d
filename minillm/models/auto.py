"""Load any saved minillm model by the ``model_type`` in its ``config.json``.

``save_pretrained`` writes ``{"model_type": ..., <config>}`` next to the weights; the table
:data:`MODEL_TYPES` maps that name to the class whose ``from_pretrained`` rebuilds it::

    model = load_model("runs/ner")        # a ModelForTokenClassification, say
    cls = model_class("gpt")              # GPT

The table is written out by hand (one line per model); ``tests/test_heads.py`` checks that
it lists every model class of the package.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import CONFIG_NAME, WEIGHTS_NAME
from .bert import BERT, BertForMaskedLM, BertForPreTraining
from .clip import CLIP
from .ffnn import FeedForwardLM
from .gpt import GPT
from .heads import (ModelForQuestionAnswering, ModelForSequenceClassification,
                    ModelForTokenClassification)
from .lstm_lm import LSTMLM
from .seq2seq import Seq2SeqTransformer
from .vision import ViT

__all__ = ["MODEL_TYPES", "model_class", "load_model"]

#: ``model_type`` (as saved in config.json) -> model class
MODEL_TYPES = {
    "gpt": GPT,
    "bert": BERT,
    "bert-for-pretraining": BertForPreTraining,
    "bert-for-masked-lm": BertForMaskedLM,
    "lstm_lm": LSTMLM,
    "ffnn_lm": FeedForwardLM,
    "seq2seq": Seq2SeqTransformer,
    "sequence_classification": ModelForSequenceClassification,
    "token_classification": ModelForTokenClassification,
    "question_answering": ModelForQuestionAnswering,
    "vit": ViT,
    "clip": CLIP,
}


def model_class(model_type):
    """The model class registered for ``model_type`` (e.g. "gpt" -> GPT)."""
    try:
        return MODEL_TYPES[model_type]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model_type {model_type!r}; known types: "
                         f"{sorted(MODEL_TYPES)}") from None


def load_model(directory, device=None, dtype=None):
    """Rebuild the model saved in ``directory`` (by ``save_pretrained`` or a Trainer
    checkpoint), whatever its class: reads ``config.json``'s ``model_type`` and calls that
    class's ``from_pretrained(directory, device, dtype)``."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    what = (f"a model directory holds {CONFIG_NAME} (the config and its model_type) and "
            f"{WEIGHTS_NAME} (the weights), as written by save_pretrained")
    if not directory.is_dir():
        raise FileNotFoundError(f"load_model: no model directory at {directory} ({what})")
    if not cfg_path.is_file():
        raise FileNotFoundError(f"load_model: {cfg_path} is missing ({what})")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"load_model: {cfg_path} is not readable JSON ({e})") from e
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ValueError(f"load_model: {cfg_path} has no model_type; known types: "
                         f"{sorted(MODEL_TYPES)}")
    try:
        cls = model_class(cfg["model_type"])
    except ValueError as e:
        raise ValueError(f"load_model: {cfg_path}: {e}") from None
    return cls.from_pretrained(directory, device=device, dtype=dtype)
