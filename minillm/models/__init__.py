"""Language models, from counting to Transformers (each module documents its model).

    ngram      NGramLM (add-k, interpolated Kneser-Ney)
    ffnn       FeedForwardLM (Bengio et al. 2003)
    lstm_lm    LSTMLM (the recurrent baseline)
    gpt        GPT (GPT-2 names and layout, KV cache)
    bert       BERT, BertForPreTraining (MLM + NSP), BertForMaskedLM
    plm        the permutation-LM objective (XLNet's two-stream attention) on BERT
    seq2seq    Seq2SeqTransformer (encoder-decoder, greedy and beam search)
"""
from .base import CONFIG_NAME, WEIGHTS_NAME, Config, PreTrainedModel, sample_next
from .bert import BERT, BertConfig, BertForMaskedLM, BertForPreTraining, BertModel
from .ffnn import FeedForwardLM, FeedForwardLMConfig
from .gpt import GPT, GPTConfig
from .lstm_lm import LSTMLM, LSTMLMConfig
from .ngram import NGramLM
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from . import plm

__all__ = ["Config", "PreTrainedModel", "sample_next", "CONFIG_NAME", "WEIGHTS_NAME", "NGramLM",
           "FeedForwardLM", "FeedForwardLMConfig", "LSTMLM", "LSTMLMConfig", "GPT", "GPTConfig",
           "BERT", "BertModel", "BertConfig", "BertForPreTraining", "BertForMaskedLM",
           "Seq2SeqTransformer", "Seq2SeqConfig", "plm"]
