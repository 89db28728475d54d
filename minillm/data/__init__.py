"""Data: tokenizers, batching (DataLoader, LM windows) and collators (padding, MLM, NER, QA).

Dataset loaders live in :mod:`minillm.datasets`.

    from minillm.data import BPETokenizer
    tok = BPETokenizer.train(lines, vocab_size=256 + 1 + 500)
"""
from .tokenizers import BPETokenizer
from .tokenizers import CharTokenizer
from .tokenizers import FMMSegmenter
from .tokenizers import Tokenizer
from .tokenizers import TokenizerFileError
from .tokenizers import WordPieceTokenizer
from .tokenizers import WordTokenizer
from .batching import DataLoader, contiguous_stream, default_collate, random_windows
from .collators import (Collator, MLMCollator, align_labels_with_tokens, encode_words, nsp_pairs,
                        pad_collate, postprocess_qa, prepare_qa_features,
                        token_classification_features)
