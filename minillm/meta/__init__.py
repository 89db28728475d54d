"""Meta-learning: few-shot classification from episodes (CLINC150's intents by default).

* :mod:`.episodes` -- classes split into disjoint meta-train / meta-validation / meta-test
  sets (CLINC150: 90 / 30 / 30 intents, seed 0), N-way K-shot episodes with query sets.
* :mod:`.encoder` -- :class:`TextEncoder`: a minillm Transformer (a small BERT from scratch,
  or a pretrained GPT/BERT body directory) whose mean-pooled token states embed a text.
* :mod:`.protonet` -- prototypical networks (Snell et al. 2017): softmax over negative
  squared distances to the class means of the support embeddings.
* :mod:`.reptile` -- Reptile (Nichol et al. 2018): first-order meta-learning of the
  encoder's initialisation; a fresh zero head per episode.
* :mod:`.baselines` -- nearest class centroid on bag-of-words vectors, and a linear head
  fitted on the support embeddings of a frozen encoder.
* :mod:`.evaluate` -- mean accuracy over test episodes with its 95% interval.

``minillm bench fewshot-intents`` runs them all on the same CLINC150 test episodes.
"""
from .baselines import BagOfWordsCentroid, linear_head_predict, nearest_centroid
from .encoder import TextEncoder
from .episodes import (META_SPLIT_SEED, META_SPLIT_SIZES, Episode, EpisodeSampler,
                       clinc_meta_splits, split_classes)
from .evaluate import confidence_interval, score
from .protonet import (episode_accuracy, episode_embeddings, prototypes, prototypical_logits,
                       prototypical_loss, protonet_predict, squared_distances, train_protonet)
from .reptile import adapt, reptile_predict, train_reptile, zero_head

__all__ = ["BagOfWordsCentroid", "linear_head_predict", "nearest_centroid", "TextEncoder",
           "META_SPLIT_SEED", "META_SPLIT_SIZES", "Episode", "EpisodeSampler",
           "clinc_meta_splits", "split_classes", "confidence_interval", "score",
           "episode_accuracy", "episode_embeddings", "prototypes", "prototypical_logits",
           "prototypical_loss", "protonet_predict", "squared_distances", "train_protonet",
           "adapt", "reptile_predict", "train_reptile", "zero_head"]
