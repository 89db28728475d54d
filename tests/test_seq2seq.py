"""The encoder-decoder Transformer: layout, masks, gradients, greedy and beam search (checked
against exhaustive search), save/load, and learning to reverse sequences.

Device-clean (NumPy in, ``.numpy()`` out), so it also runs on the strict 'fake' device.
"""
import itertools

import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

PAD, BOS, EOS = 0, 1, 2


def rng(seed=0):
    return np.random.default_rng(seed)


def ids(a):
    return mm.tensor(np.asarray(a, dtype=np.int64))


def tiny(seed=0, **kw):
    cfg = dict(src_vocab_size=7, tgt_vocab_size=6, d_model=8, nhead=2, num_encoder_layers=1,
               num_decoder_layers=2, dim_feedforward=12, dropout=0.0, max_len=10)
    mm.manual_seed(seed)
    # built from the CPU generator, then moved: the same model on every test device (the CUDA
    # generator draws a different stream, and some tests rely on this particular model)
    dev = mm.get_default_device()
    mm.set_default_device("cpu")
    try:
        model = Seq2SeqTransformer(Seq2SeqConfig(**{**cfg, **kw}))
    finally:
        mm.set_default_device(dev)
    return model.to(dev)


def test_layout_sharing_and_tying():
    m = tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names[:2] == ["src_embed.weight", "tgt_embed.weight"]
    assert "encoder.layers.0.self_attn.q_proj.weight" in names
    assert "decoder.layers.1.multihead_attn.k_proj.weight" in names
    assert not any(n.startswith("lm_head") for n in names)           # tied to tgt_embed
    assert not any(n.startswith("encoder.norm") for n in names)      # post-LN: no final norm
    pre = tiny(norm_first=True, tie_output=False, src_vocab_size=6, share_embeddings=True)
    names = [n for n, _ in pre.named_parameters()]
    assert "tgt_embed.weight" not in names and pre.tgt_embed is pre.src_embed
    assert "lm_head.weight" in names and "encoder.norm.weight" in names
    with pytest.raises(ValueError, match="share_embeddings needs"):
        Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=6, share_embeddings=True)
    with pytest.raises(ValueError, match="divisible by nhead"):
        Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=6, d_model=10, nhead=3)


def test_decoder_is_causal_and_source_padding_is_ignored(float64):
    m = tiny()
    r = rng(1)
    src = r.integers(3, 7, (2, 5))
    src[0, 3:] = PAD
    kpm = ids(src) == PAD
    tgt = r.integers(0, 6, (2, 6))
    base = m(ids(src), ids(tgt), src_key_padding_mask=kpm).numpy()
    assert base.shape == (2, 6, 6)
    for cut in range(1, 6):
        other = tgt.copy()
        other[:, cut:] = (other[:, cut:] + 1) % 6
        out = m(ids(src), ids(other), src_key_padding_mask=kpm).numpy()
        np.testing.assert_allclose(out[:, :cut], base[:, :cut], rtol=0, atol=1e-12)
        assert not np.allclose(out[:, cut:], base[:, cut:])
    # what stands at padded source positions does not matter
    src2 = src.copy()
    src2[0, 3:] = 5
    out = m(ids(src2), ids(tgt), src_key_padding_mask=kpm).numpy()
    np.testing.assert_allclose(out, base, rtol=0, atol=1e-12)


def test_gradcheck(float64):
    m = tiny(d_model=4, num_decoder_layers=1, dim_feedforward=6)
    r = rng(2)
    src, tgt = ids(r.integers(3, 7, (2, 3))), ids(r.integers(0, 6, (2, 4)))
    kpm = mm.tensor(np.array([[False, False, True], [False, False, False]]))
    assert mm.gradcheck(lambda *p: m(src, tgt, src_key_padding_mask=kpm), list(m.parameters()))


def test_beam_of_one_is_greedy():
    m = tiny(seed=3)
    src = ids(rng(3).integers(3, 7, (4, 5)))
    greedy = m.greedy_decode(src, 6, BOS, EOS).numpy()
    beam = m.beam_search(src, 1, 6, BOS, EOS, length_penalty=0.0).numpy()
    np.testing.assert_array_equal(beam[:, :greedy.shape[1]], greedy[:, :beam.shape[1]])
    assert greedy[:, 0].tolist() == [BOS] * 4


def _exhaustive_best(m, src, max_len, lp):
    """Score every hypothesis (ending in EOS, or max_len tokens long) by teacher forcing."""
    v = m.config.tgt_vocab_size
    best = (-np.inf, None)
    for n in range(1, max_len + 1):
        for body in itertools.product([t for t in range(v) if t != EOS], repeat=n - 1):
            for last in range(v):
                if n < max_len and last != EOS:
                    continue                         # shorter hypotheses end with EOS
                y = list(body) + [last]
                with mm.no_grad():
                    logp = F.log_softmax(m(src, ids([[BOS] + y[:-1]])), axis=-1).numpy()[0]
                score = sum(logp[i, t] for i, t in enumerate(y)) / n ** lp
                best = max(best, (score, [BOS] + y), key=lambda h: h[0])
    return best


def test_huge_beam_equals_exhaustive_search(float64):
    m = tiny(seed=6, tgt_vocab_size=3).eval()
    with mm.no_grad():                    # a large EOS logit: some best outputs stop early
        m.tgt_embed.weight.data[EOS] *= 3.0
    src = rng(4).integers(3, 7, (8, 4))
    max_len = 4                           # 2^4 live prefixes at most: a beam of 16 prunes nothing
    kinds = set()
    for lp in (0.0, 1.0, 2.0):
        out, scores = m.beam_search(ids(src), 16, max_len, BOS, EOS, length_penalty=lp,
                                    return_scores=True)
        for i in range(len(src)):
            score, tokens = _exhaustive_best(m, ids(src[i:i + 1]), max_len, lp)
            got = out.numpy()[i].tolist()
            assert got[:len(tokens)] == tokens and all(t == EOS for t in got[len(tokens):])
            assert abs(scores[i] - score) < 1e-10
            kinds.add(len(tokens) - 1 if tokens[-1] == EOS else "no EOS")
    assert {1, "no EOS"} <= kinds and len(kinds) >= 3, kinds    # short, long and unfinished


def _reference_beam(m, src, k, max_len, lp):
    """Plain beam search for one source: no early stop, every hypothesis scored separately."""
    v = m.config.tgt_vocab_size
    live, finished = [(0.0, [BOS])], []
    for step in range(1, max_len + 1):
        cands = []
        for s, seq in live:
            with mm.no_grad():
                logp = F.log_softmax(m(src, ids([seq])), axis=-1).numpy()[0, -1]
            cands += [(s + logp[tok], seq + [tok]) for tok in range(v)]
        cands.sort(key=lambda h: -h[0])
        live = []
        for s, seq in cands:
            if len(live) == k:
                break
            if seq[-1] == EOS:
                finished.append((s / step ** lp, seq))
            else:
                live.append((s, seq))
    return max(finished + [(s / max_len ** lp, seq) for s, seq in live], key=lambda h: h[0])


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("lp", [0.0, 1.0, 2.0])
def test_beam_search_with_early_stopping_equals_plain_beam_search(float64, k, lp):
    m = tiny(seed=5, tgt_vocab_size=5).eval()
    src = rng(5).integers(3, 7, (6, 4))
    out, scores = m.beam_search(ids(src), k, 6, BOS, EOS, length_penalty=lp, return_scores=True)
    for i in range(len(src)):
        score, tokens = _reference_beam(m, ids(src[i:i + 1]), k, 6, lp)
        got = out.numpy()[i].tolist()
        assert got[:len(tokens)] == tokens and all(t == EOS for t in got[len(tokens):])
        assert abs(scores[i] - score) < 1e-10


def test_beam_stopping_bound():
    """Stop only when no live prefix can beat the k-th finished score at any future length."""
    done = Seq2SeqTransformer._beam_done
    finished = [(-1.0, None)]
    # lp = 1: a live sum of -3.5 after 1 token may still reach -3.5 / 4 > -1 at length 4
    assert not done(finished, np.array([-3.5]), 1, 1, 4, 1.0)
    assert done(finished, np.array([-4.5]), 1, 1, 4, 1.0)
    # lp = 0: sums only decrease, so -1.5 can never beat -1
    assert done(finished, np.array([-1.5]), 1, 1, 4, 0.0)
    assert not done(finished, np.array([-0.5]), 1, 1, 4, 0.0)
    # lp < 0 penalises length: the best case is stopping at the next step
    assert done(finished, np.array([-0.6]), 1, 1, 4, -1.0)          # -0.6 * 2 < -1
    assert not done(finished, np.array([-0.4]), 1, 1, 4, -1.0)
    assert not done(finished, np.array([-9.0]), 2, 1, 4, 1.0)       # fewer than k finished


def test_save_load_round_trip(tmp_path):
    m = tiny(seed=5, share_embeddings=True, src_vocab_size=6)
    m.save_pretrained(tmp_path / "s2s")
    loaded = Seq2SeqTransformer.from_pretrained(tmp_path / "s2s")
    assert loaded.tgt_embed is loaded.src_embed
    src, tgt = ids(rng(5).integers(3, 6, (2, 4))), ids(rng(6).integers(0, 6, (2, 3)))
    np.testing.assert_array_equal(loaded(src, tgt).numpy(), m(src, tgt).numpy())


def test_bad_decode_arguments():
    m = tiny()
    src = ids([[3, 4]])
    with pytest.raises(ValueError, match="exceed the model's max_len=10"):
        m.greedy_decode(src, 10, BOS, EOS)
    with pytest.raises(ValueError, match="eos_id must be a target token id"):
        m.beam_search(src, 2, 4, BOS, 6)
    with pytest.raises(ValueError, match="beam_size"):
        m.beam_search(src, 0, 4, BOS, EOS)


def _reverse_batch(r, n, vocab=10, max_src=6):
    """Random sequences over tokens 3..vocab-1 (lengths 3..6) and their reversals."""
    lens = r.integers(3, max_src + 1, n)
    src = np.full((n, max_src), PAD)
    tgt_in = np.full((n, max_src + 1), PAD)
    tgt_out = np.full((n, max_src + 1), -100)          # ignored by cross_entropy
    for i, n_i in enumerate(lens):
        s = r.integers(3, vocab, n_i)
        src[i, :n_i] = s
        tgt_in[i, 0], tgt_in[i, 1:n_i + 1] = BOS, s[::-1]
        tgt_out[i, :n_i], tgt_out[i, n_i] = s[::-1], EOS
    return src, tgt_in, tgt_out, lens


def test_learns_to_reverse_sequences():
    vocab, steps, lr = 10, 300, 1e-2
    mm.manual_seed(0)
    m = Seq2SeqTransformer(Seq2SeqConfig(
        src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=32, nhead=2, num_encoder_layers=1,
        num_decoder_layers=1, dim_feedforward=64, dropout=0.0, max_len=16,
        share_embeddings=True))
    opt = mm.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    r = rng(0)
    for step in range(steps):
        src, tgt_in, tgt_out, _ = _reverse_batch(r, 32, vocab)
        logits = m(ids(src), ids(tgt_in), src_key_padding_mask=ids(src) == PAD)
        loss = F.cross_entropy(logits, ids(tgt_out))         # teacher forcing
        opt.param_groups[0]["lr"] = lr * (1 - step / steps)  # linear decay
        opt.zero_grad()
        loss.backward()
        opt.step()
    src, _, _, lens = _reverse_batch(rng(1), 100, vocab)
    kpm = ids(src) == PAD
    greedy = m.greedy_decode(ids(src), 7, BOS, EOS, src_key_padding_mask=kpm).numpy()
    beam = m.beam_search(ids(src), 3, 7, BOS, EOS, src_key_padding_mask=kpm).numpy()
    for out in (greedy, beam):
        right = [out[i, 1:n + 2].tolist() == src[i, :n][::-1].tolist() + [EOS]
                 for i, n in enumerate(lens)]
        assert np.mean(right) >= 0.9, np.mean(right)
    assert m.training                       # decoding restored the training mode
