"""Vision-language models: patch embedding (shapes, gradcheck), the symmetric InfoNCE loss
against NumPy, CLIP's temperature clamp and zero-shot classification, the prefix
captioner's masking and stages, and the evaluation helpers of minillm.multimodal."""
import numpy as np
import pytest

import minillm as mm
from minillm import multimodal as M
from minillm.datasets import vision as V
from minillm.models import (CLIP, GPT, CLIPConfig, GPTConfig, PrefixCaptioner, ViT, ViTConfig,
                            clip_loss, load_model, patchify, prefix_labels)


def _t(a, **kw):
    return mm.tensor(np.asarray(a), **kw)


# -- patch embedding ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, p, want", [
    ((2, 8, 8, 1), 2, (2, 16, 4)),
    ((2, 8, 8, 1), 4, (2, 4, 16)),
    ((3, 18, 18, 3), 6, (3, 9, 108)),
    ((1, 6, 4, 2), 2, (1, 6, 8)),
])
def test_patchify_shapes_and_values(shape, p, want):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = patchify(_t(x), p).numpy()
    assert got.shape == want
    cols = shape[2] // p
    for k in range(want[1]):                      # patch k is the block at (k // cols, k % cols)
        r, c = divmod(k, cols)
        block = x[:, r * p:(r + 1) * p, c * p:(c + 1) * p, :].reshape(shape[0], -1)
        np.testing.assert_array_equal(got[:, k], block)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 8)), "images must be a Tensor"),
    (np.zeros((2, 8, 6, 1)), "not divisible by patch_size=4"),
])
def test_patchify_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        patchify(_t(bad.astype(np.float32)), 4)


def test_patch_embedding_gradcheck(float64):
    rng = np.random.default_rng(1)
    x = _t(rng.standard_normal((2, 4, 4, 1)), requires_grad=True)
    w = _t(rng.standard_normal((4, 3)), requires_grad=True)
    assert mm.gradcheck(lambda x, w: patchify(x, 2) @ w, [x, w])


def test_vit_shapes_and_gradients():
    vit = ViT(ViTConfig(image_size=8, patch_size=2, channels=1, n_layer=1, n_head=2, n_embd=16))
    images = _t(np.random.default_rng(0).random((3, 8, 8)).astype(np.float32))
    h = vit(images)
    assert h.shape == (3, 17, 16) and vit.embed(images).shape == (3, 16)
    (vit.embed(images) ** 2).sum().backward()
    for name in ("patch_embed.weight", "cls_token", "pos_embed"):
        g = dict(vit.named_parameters())[name].grad
        assert g is not None and np.abs(g.numpy()).sum() > 0, name
    with pytest.raises(ValueError, match=r"ViT: images must be a Tensor \(B, 8, 8, 1\)"):
        vit(_t(np.zeros((3, 6, 6, 1), np.float32)))


def test_vit_gradcheck_tiny(float64):
    vit = ViT(ViTConfig(image_size=4, patch_size=2, channels=1, n_layer=1, n_head=1, n_embd=4))
    x = _t(np.random.default_rng(2).standard_normal((2, 4, 4, 1)), requires_grad=True)
    assert mm.gradcheck(lambda x: vit.embed(x), [x])


# -- InfoNCE ------------------------------------------------------------------------------------
def _numpy_infonce(z):
    """Independent reference: mean of -log softmax of the diagonal, rows and columns."""
    def nll(m):
        m = m - m.max(axis=1, keepdims=True)
        logp = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))
    return (nll(z) + nll(z.T)) / 2


@pytest.mark.parametrize("n, scale", [(1, 1.0), (3, 1.0), (5, 10.0), (8, 100.0)])
def test_clip_loss_matches_numpy(n, scale):
    z = np.random.default_rng(n).standard_normal((n, n)) * scale
    got = clip_loss(_t(z.astype(np.float32))).item()
    assert got == pytest.approx(_numpy_infonce(z), rel=1e-4, abs=1e-5)


def test_clip_loss_gradcheck(float64):
    z = _t(np.random.default_rng(3).standard_normal((4, 4)), requires_grad=True)
    assert mm.gradcheck(clip_loss, [z])


def test_clip_loss_needs_a_square_matrix():
    with pytest.raises(ValueError, match=r"clip_loss: logits must be a square Tensor \(n, n\)"):
        clip_loss(_t(np.zeros((2, 3), np.float32)))


def _tiny_clip(vocab=20, **kw):
    cfg = dict(image_size=4, patch_size=2, channels=1, vision_layers=1, vision_heads=2,
               vision_width=8, vocab_size=vocab, context_length=8, text_layers=1, text_heads=2,
               text_width=8, embed_dim=8)
    return CLIP(CLIPConfig(**{**cfg, **kw}))


def test_clip_logits_are_scaled_cosines_and_the_scale_is_clamped():
    model = _tiny_clip()
    rng = np.random.default_rng(0)
    images = _t(rng.random((3, 4, 4)).astype(np.float32))
    ids, mask = _t(rng.integers(0, 20, (3, 5))), _t(np.array([[1] * 5, [1] * 3 + [0] * 2,
                                                              [1] * 4 + [0]]))
    logits = model(images, ids, mask).numpy()
    i, t = model.encode_image(images).numpy(), model.encode_text(ids, mask).numpy()
    np.testing.assert_allclose(np.linalg.norm(i, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(logits, (i @ t.T) / 0.07, rtol=1e-4)
    model.logit_scale.data[...] = 10.0                    # exp(10) > 100: clamped to 100
    assert model.scale().item() == pytest.approx(100.0, rel=1e-5)
    np.testing.assert_allclose(model(images, ids, mask).numpy(), 100 * i @ t.T, rtol=1e-4)


def test_text_encoder_ignores_padding():
    model = _tiny_clip()
    ids = np.array([[3, 4, 5, 0, 0]])
    other = np.array([[3, 4, 5, 9, 7]])                   # different tokens behind the mask
    mask = _t(np.array([[1, 1, 1, 0, 0]]))
    a = model.encode_text(_t(ids), mask).numpy()
    b = model.encode_text(_t(other), mask).numpy()
    c = model.encode_text(_t(ids[:, :3])).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_clip_saves_and_loads(tmp_path):
    model = _tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    again = load_model(tmp_path / "clip")
    assert isinstance(again, CLIP) and again.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        np.testing.assert_array_equal(a.numpy() if hasattr(a, "numpy") else a,
                                      b.numpy() if hasattr(b, "numpy") else b, err_msg=k)


# -- zero-shot classification -------------------------------------------------------------------
def _quadrant_images(labels, rng):
    """4x4 grey images: class k is a bright 2x2 quadrant k on a noisy background."""
    x = rng.random((len(labels), 4, 4)).astype(np.float32) * 0.2
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 2)
        x[i, 2 * r:2 * r + 2, 2 * c:2 * c + 2] += 0.8
    return x


def test_zero_shot_on_a_toy_after_training():
    # seeded: at 100 steps of 8 the result depended on the suite's order (0.45-1.0 over
    # seeds 0-5); 300 steps of 16 reach 1.0 on each of them
    mm.backend.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 128)
    names = ["top left", "top right", "bottom left", "bottom right"]
    tok = M.caption_tokenizer(names)
    model = _tiny_clip(vocab=tok.vocab_size, context_length=16, vision_width=16,
                       text_width=16, embed_dim=16)
    before = M.zero_shot_predict(model, tok, _quadrant_images(y[:40], rng), names)
    losses = M.train_clip(model, _quadrant_images(y, rng), [[names[k]] for k in y], tok,
                          steps=300, batch_size=16, lr=3e-3)
    yt = rng.integers(0, 4, 40)
    acc = np.mean(M.zero_shot_predict(model, tok, _quadrant_images(yt, rng), names) == yt)
    assert np.mean(losses[-10:]) < losses[0] and acc >= 0.9 and np.mean(before == y[:40]) < 0.9


def test_classify_picks_the_nearest_prompt():
    model = _tiny_clip()
    rng = np.random.default_rng(1)
    images = _t(rng.random((6, 4, 4)).astype(np.float32))
    ids = _t(rng.integers(0, 20, (3, 4)))
    sims = model.encode_image(images).numpy() @ model.encode_text(ids).numpy().T
    np.testing.assert_array_equal(model.classify(images, ids).numpy(), sims.argmax(1))


@pytest.mark.parametrize("sim, caps, texts, want", [
    ([[1, 0], [0, 1]], ["a", "b"], ["a", "b"], (1.0, 1.0, 0.5, 0.5)),
    ([[0, 1], [0, 1]], ["a", "b"], ["a", "b"], (0.5, 0.5, 0.5, 0.5)),
    # texts not carried by any image are candidates, not queries
    ([[1, 0, 0], [0.4, 0, 0.5], [0, 0, 1]], ["a", "a", "c"], ["a", "b", "c"],
     (2 / 3, 1.0, 1 / 3, 0.5)),
])
def test_retrieval_recall_at_1(sim, caps, texts, want):
    sim = np.array(sim, dtype=float)
    r = M.retrieval_recall_at_1(sim, caps, np.eye(sim.shape[1]), texts)
    got = (r["image_to_text"], r["text_to_image"], r["chance_image_to_text"],
           r["chance_text_to_image"])
    assert got == pytest.approx(want)


def test_nearest_centroid_and_neighbour():
    x = np.array([[0.0, 0], [0, 1], [10, 10], [10, 11]])
    y = np.array([3, 3, 7, 7])
    q = np.array([[1.0, 1], [9, 9]])
    np.testing.assert_array_equal(M.nearest_centroid_predict(x, y, q), [3, 7])
    np.testing.assert_array_equal(M.nearest_neighbour(x, q), [1, 2])


# -- the prefix captioner -----------------------------------------------------------------------
def _captioner(vocab=12):
    vit = ViT(ViTConfig(image_size=4, patch_size=2, channels=1, n_layer=1, n_head=2, n_embd=8))
    gpt = GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=8))
    return PrefixCaptioner(vit, gpt)


def test_prefix_labels_mask_the_prefix():
    t = _t(np.array([[4, 5, -100], [6, 7, 8]]))
    got = prefix_labels(t, 3).numpy()
    np.testing.assert_array_equal(got, [[-100] * 3 + [4, 5, -100], [-100] * 3 + [6, 7, 8]])


def test_caption_loss_counts_caption_tokens_only():
    cap = _captioner()
    rng = np.random.default_rng(0)
    images = _t(rng.random((2, 4, 4)).astype(np.float32))
    ids = rng.integers(0, 12, (2, 4))
    targets = rng.integers(0, 12, (2, 4))
    targets[1, 3] = -100
    logits, loss = cap(images, _t(ids), _t(targets))
    z = logits.numpy().astype(np.float64)
    p = cap.prefix_length
    assert z.shape == (2, p + 4, 12) and p == 5
    z = z[:, p:]                                          # the caption positions only
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != -100
    want = -np.mean(np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0]
                    [keep])
    assert loss.item() == pytest.approx(want, rel=1e-5)
    # no gradient reaches the logits of the prefix positions
    logits.retain_grad()
    loss.backward()
    g = logits.grad.numpy()
    assert np.abs(g[:, :p]).max() == 0 and np.abs(g[:, p:]).max() > 0


def test_captioner_stages_freeze_what_they_should():
    cap = _captioner()
    images = _t(np.random.default_rng(0).random((2, 4, 4)).astype(np.float32))
    ids = _t(np.array([[1, 2, 3], [3, 2, 1]]))
    for stage, gpt_learns in ((1, False), (2, True)):
        cap.set_stage(stage)
        cap.zero_grad()
        cap(images, ids, ids)[1].backward()
        assert cap.projection.weight.grad is not None
        assert (cap.gpt.wte.weight.grad is not None) == gpt_learns
        assert all(p.grad is None and not p.requires_grad for p in cap.vision.parameters())
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        cap.set_stage(3)


def test_text_only_training_puts_captions_behind_a_zero_prefix():
    cap = _captioner()
    ids = _t(np.array([[1, 2, 3], [3, 2, 1]]))
    assert np.abs(cap.prefix(None, 2).numpy()).max() == 0
    logits, loss = cap(None, ids, ids)
    assert logits.shape == (2, cap.prefix_length + 3, 12)
    loss.backward()                                   # the GPT learns, the projection cannot
    assert cap.gpt.wte.weight.grad is not None and cap.projection.weight.grad is None


def test_captioner_generates_and_checks_lengths():
    cap = _captioner()
    images = _t(np.random.default_rng(0).random((3, 4, 4)).astype(np.float32))
    out = cap.generate(images, bos_id=1, max_new_tokens=4)
    assert out.shape == (3, 4) and out.dtype.kind == "i"
    with pytest.raises(ValueError, match="exceed the GPT's block_size=16"):
        cap(images, _t(np.zeros((3, 12), np.int64)))


def test_caption_lm_batch_shifts_and_pads():
    tok = M.caption_tokenizer(["red circle", "red circle left"])   # words: "red", " circle", ...
    x, y = M.caption_lm_batch(tok, ["red circle", "red circle left"])
    a, b, c = tok.encode("red circle left")
    np.testing.assert_array_equal(x.numpy(), [[tok.bos_id, a, b, tok.pad_id],
                                              [tok.bos_id, a, b, c]])
    np.testing.assert_array_equal(y.numpy(), [[a, b, tok.eos_id, -100], [a, b, c, tok.eos_id]])


@pytest.mark.parametrize("pred, lang, want", [
    ("a red circle at the top left", "en", (1, 1, 1, 1)),
    ("a red circle at the top", "en", (0, 1, 1, 0)),
    ("a blue circle at the top left", "en", (0, 1, 0, 1)),
    ("a red", "en", (0, 0, 1, 0)),
    ("左上角的红色圆形", "zh", (1, 1, 1, 1)),
    ("上方的红色三角形", "zh", (0, 0, 1, 0)),
])
def test_caption_metrics(pred, lang, want):
    ex = {"shape": "circle", "colour": "red", "position": "top left",
          "caption_en": V.shape_caption("circle", "red", "top left", "en"),
          "caption_zh": V.shape_caption("circle", "red", "top left", "zh")}
    got = M.caption_metrics([pred], [ex], lang)
    assert (got["exact_match"], got["shape"], got["colour"], got["position"]) == want
