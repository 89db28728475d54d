"""The classic language models: NGramLM (add-k, Kneser-Ney), FeedForwardLM (Bengio 2003),
LSTMLM (Zaremba 2014): hand-computed probabilities, normalisation, gradchecks, PyTorch parity,
overfitting a small text, generation with and without the recurrent cache, save/load.

Device-clean: data is made with NumPy, moved with ``mm.tensor``, read back with ``.numpy()``
/ ``.item()`` only.
"""
import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm import optim
from minillm.models.ffnn import FeedForwardLM, FeedForwardLMConfig
from minillm.models.lstm_lm import LSTMLM, LSTMLMConfig
from minillm.models.ngram import NGramLM

# A built-in English paragraph (written for these tests, ~2 KB) to overfit character by character.
PARAGRAPH = (
    "A language model assigns a probability to every sequence of words. The oldest models "
    "simply count: they remember how often each short run of words appeared in a large "
    "collection of text, and they guess the next word from the last two or three. Counting "
    "is fast and honest, but it cannot generalise: a phrase that never occurred gets almost "
    "no probability, even when it is perfectly ordinary. Smoothing moves a little mass from "
    "frequent events to rare ones, and Kneser and Ney showed how to do it well, by asking in "
    "how many different contexts a word has been seen rather than how often. Neural models "
    "take another road. Each word becomes a vector of real numbers, similar words end up "
    "close together, and a network learns to map the vectors of the context to a "
    "distribution over the next word. A recurrent network reads the text one word at a time "
    "and keeps a hidden state that summarises everything it has read so far. The long "
    "short-term memory adds gates that decide what to forget, what to write and what to "
    "show, so that gradients can travel across many steps without vanishing. Training is "
    "simple to state: show the model real text, measure how surprised it is by each next "
    "word, and nudge every weight in the direction that makes it less surprised. The "
    "average surprise is the cross-entropy, and its exponential is the perplexity, the "
    "number of equally likely words the model is effectively choosing between. A small "
    "model trained on a small text will learn that text by heart, which is useless for "
    "prediction but a fine test that the machinery works: if the loss does not fall to "
    "nearly zero, something in the forward pass, the backward pass or the optimiser is "
    "broken. Attention came later and removed the need to carry everything in one state, "
    "but the recurrent network remains the clearest place to see how a model turns a "
    "stream of symbols into predictions, one step at a time, with nothing but sums, "
    "products and a few smooth squashing functions."
)

SENTENCES = [s.split() for s in PARAGRAPH.lower().replace(",", "").replace(":", "").split(". ")]


# == NGramLM ======================================================================================
STREAM = "a b a c a b".split()


def test_kneser_ney_bigram_by_hand():
    """Stream <s> a b a c a b, d = 0.75; predictable words: <unk>, a, b, c (|V| = 4).

    Continuation counts N1+(. w): a 3 (after <s>, b, c), b 1, c 1; total 5, 3 types:
    P1(w) = max(N1+(.w) - d, 0) / 5 + (0.75 * 3 / 5) / 4.
    Bigram counts after 'a': ab 2, ac 1 -> total 3, 2 types, lambda = 0.75 * 2 / 3 = 0.5.
    """
    lm = NGramLM(2, smoothing="kneser_ney", discount=0.75).fit(STREAM)
    uni = 0.45 / 4
    p1 = {"a": 2.25 / 5 + uni, "b": 0.25 / 5 + uni, "c": 0.25 / 5 + uni, "<unk>": uni}
    assert p1 == pytest.approx({"a": 0.5625, "b": 0.1625, "c": 0.1625, "<unk>": 0.1125})
    assert lm.prob("b", ["a"]) == pytest.approx(1.25 / 3 + 0.5 * p1["b"])
    assert lm.prob("c", ["a"]) == pytest.approx(0.25 / 3 + 0.5 * p1["c"])
    assert lm.prob("a", ["a"]) == pytest.approx(0.5 * p1["a"])
    assert lm.prob("zebra", ["a"]) == pytest.approx(0.5 * p1["<unk>"])     # unknown -> <unk>
    assert lm.prob("c", ["zebra"]) == pytest.approx(p1["c"])             # unseen context
    assert lm.prob("a", []) == pytest.approx(p1["a"])                    # no context: P1
    assert lm.prob("<s>", ["a"]) == 0.0
    assert lm.logprob("b", ["a"]) == pytest.approx(np.log(1.25 / 3 + 0.5 * p1["b"]))


def test_kneser_ney_trigram_by_hand():
    """Stream <s> <s> a b a c a b. Trigram counts (raw): <s><s>a, <s>ab, aba, bac, aca, cab.
    Middle order uses continuation counts N1+(. v w): (a b) 2 (after <s> and c), (a c) 1, ...
    so P2(. | a) is the same as in the bigram case, and P3(b | <s> a) = (1 - d) / 1 + d * P2(b|a).
    """
    lm = NGramLM(3, smoothing="kneser_ney", discount=0.75).fit(STREAM)
    uni = 0.45 / 4
    p1 = {"a": 0.5625, "b": 0.1625, "c": 0.1625, "<unk>": uni}
    p2 = {"b": 1.25 / 3 + 0.5 * p1["b"], "c": 0.25 / 3 + 0.5 * p1["c"], "a": 0.5 * p1["a"],
          "<unk>": 0.5 * uni}
    assert sum(p2.values()) == pytest.approx(1.0)
    for w in p2:
        assert lm.prob(w, ["a"]) == pytest.approx(p2[w])                 # short context as given
    assert lm.prob("b", ["<s>", "a"]) == pytest.approx(0.25 + 0.75 * p2["b"])
    assert lm.prob("c", ["<s>", "a"]) == pytest.approx(0.75 * p2["c"])
    assert lm.prob("b", ["c", "a"]) == pytest.approx(0.25 + 0.75 * p2["b"])
    assert lm.prob("a", ["b", "a"]) == pytest.approx(0.75 * p2["a"])
    assert lm.prob("b", ["zebra", "a"]) == pytest.approx(p2["b"])        # unseen trigram context
    assert lm.prob("b", ["x", "y"]) == pytest.approx(p1["b"])            # nothing seen: P1
    # the vectorised scorer agrees with prob() token by token
    lp = lm.token_logprobs(["a", "b", "a", "zebra"])
    ctx = [["<s>", "<s>"], ["<s>", "a"], ["a", "b"], ["b", "a"]]
    want = [np.log(lm.prob(w, c)) for w, c in zip(["a", "b", "a", "zebra"], ctx)]
    np.testing.assert_allclose(lp, want, rtol=1e-12)


def test_add_k_by_hand():
    lm = NGramLM(2, smoothing="add_k", k=1.0).fit(STREAM)
    assert lm.prob("b", ["a"]) == pytest.approx((2 + 1) / (3 + 4))
    assert lm.prob("a", ["a"]) == pytest.approx(1 / 7)
    assert lm.prob("a", ["zebra"]) == pytest.approx(1 / 4)                # unseen context: uniform
    lm = NGramLM(2, smoothing="add_k", k=0.5).fit(STREAM)
    assert lm.prob("a", ["b"]) == pytest.approx((1 + 0.5) / (1 + 0.5 * 4))


@pytest.mark.parametrize("smoothing", ["add_k", "kneser_ney"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_next_distribution_sums_to_one(smoothing, n):
    lm = NGramLM(n, smoothing=smoothing, k=0.1).fit(SENTENCES)
    assert lm.vocab[:3] == ["<s>", "<unk>", "</s>"]
    contexts = [[], ["<s>"] * 3, ["the"], ["a", "language"], ["the", "long", "short-term"],
                ["unseen", "words", "here"], ["model", "zzz"], ["of", "the", "</s>"]]
    for ctx in contexts:
        p = lm.next_distribution(ctx)
        assert p.shape == (len(lm.vocab),) and (p >= 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12), ctx
        assert p[0] == 0.0                                                # <s> is never predicted
        for w in ("the", "model", "</s>", "never-seen"):
            assert lm.prob(w, ctx) == pytest.approx(p[lm.stoi.get(w, 1)])


def test_perplexity_matches_token_probabilities_and_more_context_fits_better():
    train, test = SENTENCES[:-3], SENTENCES[-3:]
    ppl = {}
    for n in (1, 2, 3):
        lm = NGramLM(n).fit(train)
        total, count = 0.0, 0
        for s in test:
            padded = ["<s>"] * (n - 1) + s + ["</s>"]
            for i in range(n - 1, len(padded)):
                total += lm.logprob(padded[i], padded[i - n + 1:i])
                count += 1
        ppl[n] = lm.perplexity(test)
        assert ppl[n] == pytest.approx(np.exp(-total / count), rel=1e-10)
    train_ppl = [NGramLM(n).fit(train).perplexity(train) for n in (1, 2, 3)]
    assert train_ppl[0] > train_ppl[1] > train_ppl[2]            # more context fits better


def test_sample_is_seeded_and_stops_at_end_of_sentence():
    lm = NGramLM(3).fit(SENTENCES)
    a = lm.sample(["the"], length=30, seed=1)
    assert a == lm.sample(["the"], length=30, seed=1)
    assert all(w in lm.stoi and w != "<s>" for w in a)
    assert len(a) <= 30 and ("</s>" not in a[:-1])
    many = [lm.sample([], length=200, seed=s) for s in range(5)]
    assert all(m[-1] == "</s>" for m in many)                     # sentences end
    assert len({tuple(m) for m in many}) > 1


def test_counts_of_a_large_stream_are_consistent():
    """200k Zipf-distributed tokens (the vectorised counting path at scale): at every order the
    counts of predicted n-grams add up to the number of tokens, and continuation counts to the
    number of distinct n-grams one order up."""
    r = np.random.default_rng(0)
    words = [f"w{i}" for i in r.zipf(1.3, 200_000) % 5000]
    lm = NGramLM(3).fit(words)
    for k in (1, 2, 3):
        assert lm.raw[k].sum() == len(words)
    for k in (1, 2):
        assert lm.cont[k].sum() == (lm.raw[k + 1] > 0).sum()
    assert lm.next_distribution(words[:2]).sum() == pytest.approx(1.0)
    assert lm.perplexity(words[:1000]) < lm.n_predictable


@pytest.mark.parametrize("call,exc,fragment", [
    (lambda: NGramLM(0), ValueError, "n (the order)"),
    (lambda: NGramLM(2, smoothing="witten_bell"), ValueError, "smoothing"),
    (lambda: NGramLM(2, discount=1.5), ValueError, "discount"),
    (lambda: NGramLM(2, smoothing="add_k", k=0), ValueError, "k > 0"),
    (lambda: NGramLM(2).fit("a b c"), TypeError, "split"),
    (lambda: NGramLM(2).prob("a", ["b"]), RuntimeError, "fit"),
    (lambda: NGramLM(2).fit(STREAM).prob("a", "b"), TypeError, "list of tokens"),
])
def test_ngram_errors(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


# == FeedForwardLM ================================================================================
def test_ffnn_gradcheck(float64):
    mm.manual_seed(0)
    m = FeedForwardLM(FeedForwardLMConfig(vocab_size=5, context_size=2, embed_dim=2,
                                          hidden_size=3, direct_connections=True))
    ids = mm.tensor(np.array([[1, 4, 0, 2], [3, 3, 1, 0]]))

    def fn(*params):
        return m(ids)
    assert mm.gradcheck(fn, list(m.parameters()))
    target = mm.tensor(np.array([[4, 0, 2, 1], [3, 1, 0, 2]]))
    assert mm.gradcheck(lambda *p: F.cross_entropy(m(ids), target), list(m.parameters()))


def test_ffnn_sees_exactly_its_window():
    m = FeedForwardLM(FeedForwardLMConfig(vocab_size=7, context_size=3))
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    base = m(mm.tensor(ids)).numpy()
    assert base.shape == (1, 6, 7)
    changed = ids.copy()
    changed[0, 1] = 0                                    # token 1 is in the windows of t = 1, 2, 3
    out = m(mm.tensor(changed)).numpy()
    diff = np.abs(out - base).max(axis=-1)[0]
    assert (diff[[0, 4, 5]] == 0).all() and (diff[[1, 2, 3]] > 0).all()
    # the first positions see the learned "before the start" row, not token 0
    w = m.windows(mm.tensor(ids)).numpy()
    np.testing.assert_array_equal(w[0, 0], [7, 7, 1])
    np.testing.assert_array_equal(w[0, 5], [4, 5, 6])
    with pytest.raises(IndexError, match=r"\[0, 7\)"):
        m(mm.tensor(np.array([[7]])))
        mm.backend.flush_checks()    # on a GPU-like device the value check reports at the next sync


def test_ffnn_learns_a_pattern_saves_and_generates(tmp_path):
    text = np.tile(np.array([0, 1, 2, 3, 2, 1]), 20)          # needs 2 tokens of context
    x, y = mm.tensor(text[None, :-1]), mm.tensor(text[None, 1:])
    mm.manual_seed(0)
    m = FeedForwardLM(FeedForwardLMConfig(vocab_size=4, context_size=2, embed_dim=8,
                                          hidden_size=16, direct_connections=True))
    opt = optim.Adam(m.parameters(), lr=0.05)
    for _ in range(60):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    out = m.generate(mm.tensor(np.array([[0, 1]])), 6, do_sample=False).numpy()
    np.testing.assert_array_equal(out[0], [0, 1, 2, 3, 2, 1, 0, 1])
    m.save_pretrained(tmp_path / "ffnn")
    m2 = FeedForwardLM.from_pretrained(tmp_path / "ffnn")
    np.testing.assert_array_equal(m2(x).numpy(), m(x).numpy())


# == LSTMLM =======================================================================================
def _lstm_lm(tie=False, layers=2, seed=0, **kw):
    mm.manual_seed(seed)
    cfg = dict(vocab_size=7, embed_dim=4, hidden_size=4 if tie else 3, num_layers=layers,
               tie_weights=tie)
    cfg.update(kw)
    return LSTMLM(LSTMLMConfig(**cfg))


@pytest.mark.parametrize("tie", [False, True])
def test_lstm_lm_gradcheck(float64, tie):
    m = _lstm_lm(tie, hidden_size=3 if not tie else 4, embed_dim=4 if tie else 2)
    ids = mm.tensor(np.array([[1, 5, 0], [6, 2, 2]]))
    target = mm.tensor(np.array([[5, 0, 3], [2, 2, 1]]))
    assert mm.gradcheck(lambda *p: m(ids), list(m.parameters()))
    assert mm.gradcheck(lambda *p: F.cross_entropy(m(ids), target), list(m.parameters()))


def test_lstm_lm_parameter_names_and_tie_error():
    assert [n for n, _ in _lstm_lm(False).named_parameters()] == [
        "embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_l0",
        "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_l1", "head.weight", "head.bias"]
    names = [n for n, _ in _lstm_lm(True).named_parameters()]
    assert "embed.weight" in names and "head_bias" in names and "head.weight" not in names
    with pytest.raises(ValueError, match="embed_dim == hidden_size"):
        LSTMLM(LSTMLMConfig(vocab_size=5, embed_dim=4, hidden_size=6, tie_weights=True))


@pytest.mark.torch
@pytest.mark.parametrize("tie", [False, True])
def test_lstm_lm_matches_pytorch(float64, tie):
    torch = pytest.importorskip("torch")
    V, D, H, L = 11, 5, 5 if tie else 4, 2
    m = _lstm_lm(tie, vocab_size=V, embed_dim=D, hidden_size=H, num_layers=L)
    emb = torch.nn.Embedding(V, D, dtype=torch.float64)
    lstm = torch.nn.LSTM(D, H, L, batch_first=True, dtype=torch.float64)
    dec = torch.nn.Linear(H, V, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(m.embed.weight.numpy()))
        for k in range(L):
            w_ih, w_hh, b = m.lstm.layer_weights(k)
            getattr(lstm, f"weight_ih_l{k}").copy_(torch.tensor(w_ih.numpy().T))
            getattr(lstm, f"weight_hh_l{k}").copy_(torch.tensor(w_hh.numpy().T))
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.tensor(b.numpy()))
            getattr(lstm, f"bias_hh_l{k}").zero_()
        if tie:
            dec.weight = emb.weight
            dec.bias.copy_(torch.tensor(m.head_bias.numpy()))
        else:
            dec.weight.copy_(torch.tensor(m.head.weight.numpy().T))
            dec.bias.copy_(torch.tensor(m.head.bias.numpy()))
    r = np.random.default_rng(0)
    ids, target = r.integers(0, V, (3, 6)), r.integers(0, V, (3, 6))
    logits = m(mm.tensor(ids))
    loss = F.cross_entropy(logits, mm.tensor(target))
    loss.backward()
    out_t, _ = lstm(emb(torch.tensor(ids)))
    logits_t = dec(out_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t.reshape(-1, V),
                                               torch.tensor(target).reshape(-1))
    loss_t.backward()

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)
    close(logits.numpy(), logits_t.detach().numpy())
    close(loss.item(), loss_t.item())
    close(m.embed.weight.grad.numpy(), emb.weight.grad.numpy())
    for k in range(L):
        w_ih, w_hh, b = m.lstm.layer_weights(k)
        close(w_ih.grad.numpy(), getattr(lstm, f"weight_ih_l{k}").grad.numpy().T)
        close(w_hh.grad.numpy(), getattr(lstm, f"weight_hh_l{k}").grad.numpy().T)
        close(b.grad.numpy(), getattr(lstm, f"bias_ih_l{k}").grad.numpy())
    if tie:
        close(m.head_bias.grad.numpy(), dec.bias.grad.numpy())
    else:
        close(m.head.weight.grad.numpy(), dec.weight.grad.numpy().T)
        close(m.head.bias.grad.numpy(), dec.bias.grad.numpy())


def test_lstm_lm_overfits_a_paragraph():
    """A seeded tiny character-level LSTM LM learns ~2 KB of text by heart (loss < 0.1)."""
    chars = sorted(set(PARAGRAPH))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in PARAGRAPH])
    B = 16
    T = (len(ids) - 1) // B                                 # 16 streams of ~122 characters
    x = mm.tensor(ids[:B * T].reshape(B, T))
    y = mm.tensor(ids[1:B * T + 1].reshape(B, T))
    mm.manual_seed(0)
    m = LSTMLM(LSTMLMConfig(vocab_size=len(chars), embed_dim=32, hidden_size=128, num_layers=1))
    opt = optim.Adam(m.parameters(), lr=0.03)
    first = None
    for _ in range(90):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        first = loss.item() if first is None else first
    assert first > 3.0 and loss.item() < 0.1, (first, loss.item())


@pytest.mark.parametrize("tie", [False, True])
def test_lstm_lm_generate_with_cache_equals_recompute(tie):
    m = _lstm_lm(tie, vocab_size=13, dropout=0.3)             # generate() switches to eval
    prompt = mm.tensor(np.array([[1, 2, 3], [4, 5, 6]]))
    greedy = m.generate(prompt, 8, do_sample=False)
    np.testing.assert_array_equal(greedy.numpy(),
                                  m.generate(prompt, 8, do_sample=False, use_cache=False).numpy())
    a = m.generate(prompt, 8, seed=3, temperature=1.5, top_k=5)
    b = m.generate(prompt, 8, seed=3, temperature=1.5, top_k=5, use_cache=False)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == (2, 11) and m.training


def test_lstm_lm_state_continues_a_sequence():
    """Truncated BPTT interface: chunks with the state carried give the full-sequence logits;
    forward_step(ids, init_cache(B)) equals model(ids)."""
    m = _lstm_lm(False, vocab_size=9)
    ids = np.random.default_rng(1).integers(0, 9, (2, 10))
    full = m(mm.tensor(ids)).numpy()
    a, state = m(mm.tensor(ids[:, :6]), return_state=True)
    state = m.detach_state(state)
    b, state = m(mm.tensor(ids[:, 6:]), state, return_state=True)
    np.testing.assert_allclose(np.concatenate([a.numpy(), b.numpy()], axis=1), full,
                               rtol=1e-5, atol=1e-6)
    h, c = state
    assert h.shape == c.shape == (2, 2, 3)
    step, _ = m.forward_step(mm.tensor(ids), m.init_cache(2))
    np.testing.assert_array_equal(step.numpy(), full)
    loss = F.cross_entropy(b, mm.tensor(ids[:, 6:]))
    loss.backward()                                          # stops at the detached state
    assert m.embed.weight.grad is not None


def test_lstm_lm_dropout_only_in_training():
    m = _lstm_lm(False, dropout=0.5)
    ids = mm.tensor(np.array([[1, 2, 3, 4]]))
    t1, t2 = m(ids).numpy(), m(ids).numpy()
    assert not np.array_equal(t1, t2)
    m.eval()
    np.testing.assert_array_equal(m(ids).numpy(), m(ids).numpy())


@pytest.mark.parametrize("tie", [False, True])
def test_lstm_lm_save_load_bit_identical(tmp_path, tie):
    m = _lstm_lm(tie, vocab_size=10)
    m.save_pretrained(tmp_path / "lstm")
    m2 = LSTMLM.from_pretrained(tmp_path / "lstm")
    assert m2.config == m.config
    ids = mm.tensor(np.array([[1, 2, 3, 9, 0]]))
    np.testing.assert_array_equal(m2(ids).numpy(), m(ids).numpy())
    if tie:       # still tied after loading: one parameter serves both ends
        assert "head.weight" not in m2.state_dict()
