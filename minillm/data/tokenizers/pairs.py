"""Incremental pair statistics, the engine of BPE and WordPiece training.

Both trainers start from a corpus of *words* (each a list of symbol ids, with a frequency)
and repeatedly merge one adjacent pair of symbols ``(a, b)`` into a new symbol. The naive
trainer recounts every pair in every word after each merge: O(corpus) per merge. The usual
trick, used here, is to keep

* ``pair_counts[(a, b)]``: how often the pair occurs, weighted by word frequency,
* ``where[(a, b)]``: the indices of the words that contain it,
* ``symbol_counts[a]``: how often each symbol occurs (WordPiece's score needs it),

and, after a merge, to visit only the words in ``where[(a, b)]``: subtract their old pairs,
add their new ones. A merge touches a small fraction of the corpus, so training costs
roughly O(merges x affected words) instead of O(merges x corpus).

``where`` is allowed to go stale (it may list a word that no longer has the pair); the
merge step simply skips such words.
"""
from collections import defaultdict


def merge_word(symbols, a, b, new):
    """Replace every occurrence of the pair ``(a, b)`` in ``symbols``, left to right.

    Returns the new list and the positions (in it) of the merged symbols. ``list.index``
    does the scanning in C, which matters for long words (a Chinese phrase is one GPT-2
    pre-token of many bytes).
    """
    out, where, i, n = [], [], 0, len(symbols)
    while True:
        try:
            j = symbols.index(a, i)
        except ValueError:
            out.extend(symbols[i:])
            return out, where
        if j + 1 < n and symbols[j + 1] == b:
            out.extend(symbols[i:j])
            where.append(len(out))
            out.append(new)
            i = j + 2
        else:
            out.extend(symbols[i:j + 1])
            i = j + 1


class PairCounts:
    """Words (lists of symbol ids) with frequencies, and their pair/symbol statistics."""

    def __init__(self, words, freqs):
        self.words = [list(w) for w in words]
        self.freqs = list(freqs)
        self.pair_counts = defaultdict(int)
        self.where = defaultdict(set)
        self.symbol_counts = defaultdict(int)
        self.pairs_with = defaultdict(set)      # symbol -> pairs it is part of (may be stale)
        for i, (w, f) in enumerate(zip(self.words, self.freqs)):
            for s in w:
                self.symbol_counts[s] += f
            for p in zip(w, w[1:]):
                self.pair_counts[p] += f
                self.where[p].add(i)
                self.pairs_with[p[0]].add(p)
                self.pairs_with[p[1]].add(p)

    def merge(self, pair, new):
        """Merge ``pair`` into the symbol ``new`` in every word that has it.

        Returns ``{pair: change in count}`` for the pairs whose count changed (the merged
        pair itself disappears from ``pair_counts``).
        """
        a, b = pair
        changes = defaultdict(int)
        for i in sorted(self.where.pop(pair, ())):
            old = self.words[i]
            w, merged = merge_word(old, a, b, new)
            if not merged:
                continue                       # stale index entry: the pair is gone
            f = self.freqs[i]
            # Only the neighbours of each merged symbol change: x a b y -> x ab y loses
            # (x, a) and (b, y) and gains (x, ab) and (ab, y). Two merged symbols side by
            # side (a b a b -> ab ab) share one neighbour pair: (b, a) becomes (ab, ab).
            merged_set = set(merged)
            for k in merged:
                if k > 0:
                    left = k - 1 in merged_set
                    changes[(b, a) if left else (w[k - 1], a)] -= f
                    p = (new, new) if left else (w[k - 1], new)
                    changes[p] += f
                    self.where[p].add(i)
                if k + 1 < len(w) and k + 1 not in merged_set:
                    changes[(b, w[k + 1])] -= f
                    changes[(new, w[k + 1])] += f
                    self.where[(new, w[k + 1])].add(i)
            n_merged = len(merged) * f
            self.symbol_counts[a] -= n_merged
            self.symbol_counts[b] -= n_merged
            self.symbol_counts[new] += n_merged
            self.words[i] = w
        self.pair_counts.pop(pair, None)
        changed = {}
        for p, d in changes.items():
            if d == 0:
                continue
            count = self.pair_counts.get(p, 0) + d
            if count > 0:
                self.pair_counts[p] = count
                self.pairs_with[p[0]].add(p)
                self.pairs_with[p[1]].add(p)
            else:
                self.pair_counts.pop(p, None)
                self.where.pop(p, None)
            changed[p] = d
        return changed
