"""BERT (Devlin et al., 2019): a bidirectional Transformer encoder, with its pretraining heads.

The module tree and parameter names are Hugging Face's ``BertModel`` / ``BertForPreTraining``,
so a ``bert-base-*`` checkpoint maps onto it by name (transpose the ``Linear`` weights: minillm
stores them ``(in, out)``)::

    embeddings.{word,position,token_type}_embeddings, embeddings.LayerNorm
    encoder.layer.{i}.attention.self.{query,key,value}
    encoder.layer.{i}.attention.output.{dense,LayerNorm}
    encoder.layer.{i}.intermediate.dense
    encoder.layer.{i}.output.{dense,LayerNorm}
    pooler.dense
    cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias    (MLM head)
    cls.seq_relationship                                                 (NSP head)

The MLM decoder has no weight of its own: it is the word-embedding matrix ``E`` (tied), so
HF's ``cls.predictions.decoder.weight`` / ``decoder.bias`` are copies of
``bert.embeddings.word_embeddings.weight`` / ``cls.predictions.bias`` and are not stored.

The forward pass, for token ids ``x`` (B, T), token types ``s`` and positions ``0..T-1``::

    h_0 = LayerNorm(E[x] + P[pos] + S[s])                       (dropout after it)
    for each layer (post-LN, as in the paper):
        a   = concat_k softmax(Q_k K_k^T / sqrt(d) + mask) V_k    (Q = h W_q, K = h W_k, V = h W_v)
        h'  = LayerNorm(h + a W_o)
        h   = LayerNorm(h' + GELU(h' W_1) W_2)                  (GELU exact: x * Phi(x))
    pooled = tanh(h[:, 0] W_p)                                  ([CLS] vector)
    MLM logits = LayerNorm(GELU(h W_t)) E^T + b                 (B, T, V)
    NSP logits = pooled W_nsp                                   (B, 2)

``attention_mask`` (B, T) follows HF: 1 = real token, 0 = padding (keys that are padding get
probability 0). ``attention_mask_3d`` (B, T, T) bool, True = query i may attend to key j, is
combined with it: that is how :mod:`minillm.models.plm` imposes factorization orders.
Special token ids ([PAD], [CLS], [SEP], [MASK]) come from the tokenizer; only
``pad_token_id`` (the embedding row kept at zero) is in the config.

Models (``model_type`` in ``config.json``): :class:`BERT` (= ``BertModel``, "bert") returns
``(sequence_output, pooled_output)``; :class:`BertForPreTraining` ("bert-for-pretraining")
returns a :class:`BertForPreTrainingOutput` (logits and MLM + NSP loss); :class:`BertForMaskedLM`
("bert-for-masked-lm", no pooler, as HF's) returns the logits, or ``(logits, loss)`` with labels,
like GPT. After
pretraining, ``model.bert.save_pretrained(dir)`` keeps the encoder for fine-tuning::

    cfg = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=512, pad_token_id=vocab["[PAD]"])
    model = BertForPreTraining(cfg)
    out = model(ids, token_type_ids, attention_mask, labels=labels, next_sentence_label=nsp)
    out.loss.backward()
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .. import functional as F
from ..autograd import Tensor, tensor, zeros
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, init
from ..nn.attention import attention, merge_heads, split_heads
from ..validation import int_tensor
from .base import Config, PreTrainedModel

__all__ = ["BertConfig", "BERT", "BertModel", "BertForPreTraining", "BertForMaskedLM",
           "BertForPreTrainingOutput", "extended_attention_mask"]

#: hidden_act values (HF's names) -> activation
_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x, approximate="none"),            # exact, BERT's
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": F.tanh,
}


@dataclasses.dataclass
class BertConfig(Config):
    """BERT's hyper-parameters, with Hugging Face's field names (``bert-base``'s defaults)."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: Optional[int] = 0
    hidden_act: str = "gelu"
    initializer_range: float = 0.02

    def __post_init__(self):
        self._require_ints("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "type_vocab_size")
        self._require_divisible("hidden_size", "num_attention_heads")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BertConfig: hidden_act {self.hidden_act!r} is not one of "
                             f"{sorted(_ACTIVATIONS)}")
        self._require_probabilities("hidden_dropout_prob", "attention_probs_dropout_prob")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"BertConfig: pad_token_id {self.pad_token_id} is outside the "
                             f"vocabulary [0, {self.vocab_size})")


# -- inputs and masks ------------------------------------------------------------------------------
def extended_attention_mask(attention_mask, attention_mask_3d, batch, length, dev):
    """One bool mask for ``scaled_dot_product_attention`` (True = may attend), or None.

    ``attention_mask`` (B, T), 1/True = real token, 0 = padding, becomes (B, 1, 1, T): no
    query attends to a padding key. ``attention_mask_3d`` (B, T, T) bool (query i, key j)
    becomes (B, 1, T, T). Given both, a key must pass both.
    """
    mask = None
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor):
            attention_mask = tensor(np.asarray(attention_mask), device=dev)
        if attention_mask.shape != (batch, length):
            raise ValueError(f"BERT: attention_mask must have shape (B, T) = {(batch, length)}, "
                             f"got {attention_mask.shape} (1 = real token, 0 = padding)")
        if attention_mask.device != dev:
            raise RuntimeError(f"BERT: attention_mask on {attention_mask.device}, model on {dev}")
        mask = (attention_mask.data != 0)[:, None, None, :]
    if attention_mask_3d is not None:
        m = attention_mask_3d
        if not isinstance(m, Tensor) or m.dtype != np.bool_:
            raise TypeError("BERT: attention_mask_3d must be a bool Tensor (True = may attend), "
                            f"got {getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != (batch, length, length):
            raise ValueError(f"BERT: attention_mask_3d must have shape (B, T, T) = "
                             f"{(batch, length, length)}, got {m.shape}")
        if m.device != dev:
            raise RuntimeError(f"BERT: attention_mask_3d on {m.device}, model on {dev}")
        m = m.data[:, None, :, :]
        mask = m if mask is None else mask & m
    return None if mask is None else Tensor.wrap(mask, dev)


# -- embeddings ----------------------------------------------------------------------------------
class BertEmbeddings(Module):
    """h_0 = Dropout(LayerNorm(E[x] + P[pos] + S[token_type]))."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        """``input_ids`` (B, T) or ``inputs_embeds`` (B, T, H) replacing ``E[x]``."""
        dev = self.word_embeddings.weight.device
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("BERT: give exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            input_ids = int_tensor(input_ids, "input_ids", dev, "BERT")
            if input_ids.ndim != 2:
                raise ValueError(f"BERT: input_ids must be (B, T), got shape {input_ids.shape}")
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[:2]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"BERT: sequence length {length} exceeds max_position_embeddings "
                             f"{self.position_embeddings.num_embeddings}")
        if position_ids is None:
            pos = self.position_embeddings.weight[:length]                   # (T, H)
        else:
            pos = self.position_embeddings(int_tensor(position_ids, "position_ids", dev, "BERT"))
        if token_type_ids is None:
            types = self.token_type_embeddings.weight[0]                     # type 0 everywhere
        else:
            token_type_ids = int_tensor(token_type_ids, "token_type_ids", dev, "BERT")
            if token_type_ids.shape != (batch, length):
                raise ValueError(f"BERT: token_type_ids must have shape {(batch, length)}, got "
                                 f"{token_type_ids.shape}")
            types = self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(inputs_embeds + pos + types))


# -- one encoder layer ---------------------------------------------------------------------------
class BertSelfAttention(Module):
    """softmax(Q K^T / sqrt(d) + mask) V for every head; Q = h W_q, K = kv W_k, V = kv W_v.

    ``key_value_states`` (default: the input itself) lets the keys/values come from another
    stream: XLNet's query stream reads the content stream this way (see ``plm.py``).
    """

    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        h = config.hidden_size
        self.query = Linear(h, h)
        self.key = Linear(h, h)
        self.value = Linear(h, h)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states, attention_mask=None, key_value_states=None):
        kv = hidden_states if key_value_states is None else key_value_states
        h = self.num_attention_heads
        q = split_heads(self.query(hidden_states), h)
        k = split_heads(self.key(kv), h)
        v = split_heads(self.value(kv), h)
        ctx, _ = attention(q, k, v, attention_mask, self.dropout_p if self.training else 0.0)
        return merge_heads(ctx)


class BertSelfOutput(Module):
    """h' = LayerNorm(h + Dropout(a W_o))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertAttention(Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)        # HF's name: attention.self.query ...
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None):
        return self.output(self.self(hidden_states, attention_mask, key_value_states),
                           hidden_states)


class BertIntermediate(Module):
    """act(h W_1), act = GELU (exact) by default."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, hidden_states):
        return self.act(self.dense(hidden_states))


class BertOutput(Module):
    """h = LayerNorm(h' + Dropout(u W_2))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertLayer(Module):
    """One post-LN Transformer encoder layer: attention sub-layer, then feed-forward sub-layer."""

    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, attention_mask=None, key_value_states=None):
        a = self.attention(hidden_states, attention_mask, key_value_states)
        return self.output(self.intermediate(a), a)


class BertEncoder(Module):
    def __init__(self, config):
        super().__init__()
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, attention_mask=None):
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


class BertPooler(Module):
    """pooled = tanh(h[:, 0] W_p + b_p): the [CLS] position's vector."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


# -- the model -------------------------------------------------------------------------------------
class BertPreTrainedModel(PreTrainedModel):
    """Shared by all BERT models: the config class and BERT's initialisation.

    Init (as in the paper/HF): Linear and Embedding weights ~ N(0, initializer_range^2), biases
    zero, the padding row of the word embeddings zero, LayerNorm weight 1 and bias 0.
    """

    config_class = BertConfig

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, Linear):
            init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Embedding):
            init.normal_(module.weight, 0.0, std)
            module._zero_padding_row()
        elif isinstance(module, LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)

    def post_init(self):
        self.apply(self._init_weights)

    def _resize_output_bias(self, new_num_tokens):
        """New tokens' MLM bias starts at the mean of the old ones (as their embedding row)."""
        head = getattr(getattr(self, "cls", None), "predictions", None)
        if head is not None:
            b = head.bias
            xp = b.device.xp
            rows = xp.full(new_num_tokens - b.shape[0], b.data.mean(), dtype=b.dtype)
            head.bias = Parameter(tensor(xp.concatenate([b.data, rows]), device=b.device),
                                  requires_grad=b.requires_grad)

    def get_input_embeddings(self):
        """The word-embedding Parameter E (V, H)."""
        return self.bert.embeddings.word_embeddings.weight


class BERT(BertPreTrainedModel):
    """The BERT encoder: ``forward(input_ids, token_type_ids=None, attention_mask=None)``
    returns ``(sequence_output (B, T, H), pooled_output (B, H))`` (pooled is None without a
    pooler, as inside :class:`BertForMaskedLM`)."""

    model_type = "bert"

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        """The word-embedding Parameter E (V, H)."""
        return self.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None,
                attention_mask_3d=None, position_ids=None, inputs_embeds=None):
        """Encode a batch. ``attention_mask`` (B, T): 1 = real token, 0 = padding;
        ``attention_mask_3d`` (B, T, T) bool: True = query i may attend to key j;
        ``inputs_embeds`` (B, T, H) replaces the word-embedding lookup."""
        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        b, t = h.shape[:2]
        mask = extended_attention_mask(attention_mask, attention_mask_3d, b, t, h.device)
        h = self.encoder(h, mask)
        pooled = self.pooler(h) if self.pooler is not None else None
        return h, pooled


BertModel = BERT


# -- heads -----------------------------------------------------------------------------------------
class BertPredictionHeadTransform(Module):
    """LayerNorm(act(h W_t + b_t))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states):
        return self.LayerNorm(self.act(self.dense(hidden_states)))


class BertLMPredictionHead(Module):
    """MLM logits = transform(h) E^T + bias, with ``E`` the (tied) word-embedding matrix (V, H)."""

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = Parameter(zeros(config.vocab_size))

    def forward(self, hidden_states, decoder_weight):
        return F.linear(self.transform(hidden_states), decoder_weight.transpose(), self.bias)


class BertOnlyMLMHead(Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, sequence_output, decoder_weight):
        return self.predictions(sequence_output, decoder_weight)


class BertPreTrainingHeads(Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = Linear(config.hidden_size, 2)

    def forward(self, sequence_output, pooled_output, decoder_weight):
        return self.predictions(sequence_output, decoder_weight), \
            self.seq_relationship(pooled_output)


@dataclasses.dataclass
class BertForPreTrainingOutput:
    """What :class:`BertForPreTraining` returns. ``loss = mlm_loss + nsp_loss`` (the terms
    whose labels were given; None without labels)."""

    prediction_logits: Tensor              # (B, T, V)
    seq_relationship_logits: Tensor        # (B, 2): 0 = B follows A, 1 = B is random
    loss: Optional[Tensor] = None
    mlm_loss: Optional[Tensor] = None
    nsp_loss: Optional[Tensor] = None


def _mlm_loss(logits, labels, dev):
    """Cross-entropy over the positions whose label is not -100 (the masked ones)."""
    labels = int_tensor(labels, "labels", dev, "BERT")
    return F.cross_entropy(logits, labels, ignore_index=-100)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pretraining heads: masked LM (MLM) and next-sentence prediction (NSP).

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None,
    next_sentence_label=None)`` returns a :class:`BertForPreTrainingOutput`. ``labels``
    (B, T) hold the original token at masked positions and -100 elsewhere;
    ``next_sentence_label`` (B,) is 0 when sentence B follows A, 1 when it is random::

        loss = CE(MLM logits at labelled positions, labels) + CE(NSP logits, next_sentence_label)
    """

    model_type = "bert-for-pretraining"

    def __init__(self, config):
        super().__init__(config)
        self.bert = BERT(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        """The MLM decoder weight: the word-embedding Parameter itself (tied)."""
        return self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None, labels=None,
                next_sentence_label=None, attention_mask_3d=None, position_ids=None,
                inputs_embeds=None):
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask, attention_mask_3d,
                                position_ids, inputs_embeds)
        logits, nsp_logits = self.cls(seq, pooled, self.get_output_embeddings())
        out = BertForPreTrainingOutput(logits, nsp_logits)
        dev = seq.device
        if labels is not None:
            out.mlm_loss = _mlm_loss(logits, labels, dev)
        if next_sentence_label is not None:
            out.nsp_loss = F.cross_entropy(
                nsp_logits, int_tensor(next_sentence_label, "next_sentence_label", dev, "BERT"))
        terms = [t for t in (out.mlm_loss, out.nsp_loss) if t is not None]
        if terms:
            out.loss = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        return out


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the MLM head only (no pooler, as HF's ``BertForMaskedLM``).

    ``forward(input_ids, token_type_ids=None, attention_mask=None, labels=None)`` returns the
    logits (B, T, V), like every minillm LM; when ``labels`` (B, T; -100 = not predicted) are
    given it returns ``(logits, loss)`` with the mean cross-entropy over the labelled positions
    (GPT's convention for ``model(ids, targets)``).
    """

    model_type = "bert-for-masked-lm"

    def __init__(self, config):
        super().__init__(config)
        self.bert = BERT(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        """The MLM decoder weight: the word-embedding Parameter itself (tied)."""
        return self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids=None, token_type_ids=None, attention_mask=None, labels=None,
                attention_mask_3d=None, position_ids=None, inputs_embeds=None):
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask, attention_mask_3d,
                           position_ids, inputs_embeds)
        logits = self.cls(seq, self.get_output_embeddings())
        if labels is None:
            return logits
        return logits, _mlm_loss(logits, labels, seq.device)
