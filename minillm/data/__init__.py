"""Data: tokenizers (and, later, dataset loaders and batching).

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
