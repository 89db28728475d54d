"""Language models, from counting to Transformers (each module documents its model).

    ngram      NGramLM (add-k, interpolated Kneser-Ney)
    ffnn       FeedForwardLM (Bengio et al. 2003)
    lstm_lm    LSTMLM (the recurrent baseline)
    gpt        GPT (GPT-2 names and layout, KV cache)
    bert       BERT, BertForPreTraining (MLM + NSP), BertForMaskedLM
    plm        the permutation-LM objective (XLNet's two-stream attention) on BERT
    seq2seq    Seq2SeqTransformer (encoder-decoder, greedy and beam search)
    heads      task heads on a GPT or BERT body: ModelForSequenceClassification,
               ModelForTokenClassification (BIO Viterbi decoding), ModelForQuestionAnswering
    vision     ViT (patches + class token + bidirectional Transformer blocks), patchify
    clip       CLIP (ViT + a text Transformer, symmetric InfoNCE, zero-shot classification)
    captioner  PrefixCaptioner (LLaVA-style: projected image states as a GPT's prefix)
    auto       MODEL_TYPES, model_class, load_model (any saved model by its model_type)
    hf         Hugging Face GPT-2/BERT checkpoints (safetensors): load_hf, save_hf,
               load_hf_tokenizer
"""
from .base import CONFIG_NAME, WEIGHTS_NAME, Config, PreTrainedModel, sample_next
from .bert import BERT, BertConfig, BertForMaskedLM, BertForPreTraining, BertModel
from .ffnn import FeedForwardLM, FeedForwardLMConfig
from .gpt import GPT, GPTConfig
from .lstm_lm import LSTMLM, LSTMLMConfig
from .ngram import NGramLM
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from .heads import (ModelForQuestionAnswering, ModelForSequenceClassification,
                    ModelForTokenClassification, QuestionAnsweringConfig,
                    SequenceClassificationConfig, TokenClassificationConfig, bio_transition_mask,
                    bio_viterbi)
from .vision import ViT, ViTConfig, patchify
from .clip import CLIP, CLIPConfig, TextTransformer, clip_loss
from .captioner import PrefixCaptioner, prefix_labels
from .auto import MODEL_TYPES, load_model, model_class
from .hf import load_hf, load_hf_tokenizer, save_hf
from . import plm

__all__ = ["Config", "PreTrainedModel", "sample_next", "CONFIG_NAME", "WEIGHTS_NAME", "NGramLM",
           "FeedForwardLM", "FeedForwardLMConfig", "LSTMLM", "LSTMLMConfig", "GPT", "GPTConfig",
           "BERT", "BertModel", "BertConfig", "BertForPreTraining", "BertForMaskedLM",
           "Seq2SeqTransformer", "Seq2SeqConfig", "plm",
           "ModelForSequenceClassification", "SequenceClassificationConfig",
           "ModelForTokenClassification", "TokenClassificationConfig",
           "ModelForQuestionAnswering", "QuestionAnsweringConfig", "bio_viterbi",
           "bio_transition_mask", "MODEL_TYPES", "model_class", "load_model",
           "load_hf", "save_hf", "load_hf_tokenizer", "ViT", "ViTConfig", "patchify", "CLIP",
           "CLIPConfig", "TextTransformer", "clip_loss", "PrefixCaptioner", "prefix_labels"]
