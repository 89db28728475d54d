"""Tokenizers: text <-> token ids.

=====================  ==========================================================
``CharTokenizer``      one token per Unicode character (any script)
``WordTokenizer``      words: GPT-2-style regex for English, dictionary (FMM) word
                       segmentation for Chinese
``BPETokenizer``       byte-level BPE as in GPT-2 (exact for any text, no ``<unk>``);
                       reads/writes ``vocab.json`` + ``merges.txt``
``WordPieceTokenizer`` BERT's WordPiece (``##`` pieces); reads/writes ``vocab.txt``
=====================  ==========================================================

All share the ``Tokenizer`` base class: ``train``, ``encode``/``decode``,
``encode_with_offsets``, ``encode_batch`` (padding, truncation, attention masks,
NumPy/minillm tensors), special-token ids and ``save``/``Tokenizer.load`` (one JSON file).
"""
from .base import SPECIAL_NAMES, Tokenizer, TokenizerFileError
from .bpe import BPETokenizer
from .char import CharTokenizer
from .pretokenize import bytes_to_unicode, gpt2_split
from .word import FMMSegmenter, WordTokenizer
from .wordpiece import WordPieceTokenizer

__all__ = ["Tokenizer", "TokenizerFileError", "SPECIAL_NAMES", "CharTokenizer", "WordTokenizer",
           "FMMSegmenter", "BPETokenizer", "WordPieceTokenizer", "gpt2_split", "bytes_to_unicode"]
