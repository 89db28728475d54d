"""Knowledge distillation: the loss against NumPy (and PyTorch), its gradients, the T^2
scaling, the Trainer integration with task heads, errors.

Device-clean (data made with NumPy, read back with ``.numpy()``/``.item()``), so the file
also runs on the strict 'fake' device.
"""
import numpy as np
import pytest

import minillm as mm
import minillm.functional as F
from minillm.finetune.distill import DistillationLoss, distill, distillation_loss
from minillm.models import (BertConfig, ModelForQuestionAnswering,
                            ModelForSequenceClassification, ModelForTokenClassification)
from minillm.training import Trainer, TrainingArguments


# -- independent NumPy reference -------------------------------------------------------------------
def np_log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def np_distill(z, v, y, T, alpha, ignore=-100):
    """alpha T^2 mean_kept KL(p || q) + (1 - alpha) mean_kept CE, in float64."""
    c = z.shape[-1]
    z, v = z.reshape(-1, c).astype(np.float64), v.reshape(-1, c).astype(np.float64)
    keep = np.ones(len(z), bool) if y is None else (y.reshape(-1) != ignore)
    log_p, log_q = np_log_softmax(v / T), np_log_softmax(z / T)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)[keep].mean()
    loss = alpha * T * T * kl
    if alpha < 1:
        yy = y.reshape(-1)[keep]
        ce = -np_log_softmax(z[keep])[np.arange(len(yy)), yy].mean()
        loss += (1 - alpha) * ce
    return loss


def make_case(shape, ignore_frac, seed, scale=2.0):
    r = np.random.default_rng(seed)
    z = (scale * r.standard_normal(shape)).astype(np.float64)
    v = (scale * r.standard_normal(shape)).astype(np.float64)
    y = r.integers(0, shape[-1], size=shape[:-1])
    if ignore_frac:
        y = np.where(r.random(shape[:-1]) < ignore_frac, -100, y)
        y.reshape(-1)[0] = 1                          # at least one counted position
    return z, v, y


def T_(a, **kw):
    return mm.tensor(np.asarray(a), **kw)


# (temperature, alpha, shape, fraction of positions ignored, labels given)
VALUE_CASES = [
    (1.0, 0.5, (6, 4), 0.0, True),
    (2.0, 0.5, (6, 4), 0.0, True),
    (4.0, 0.9, (5, 7), 0.0, True),
    (0.5, 0.3, (5, 3), 0.0, True),
    (2.0, 1.0, (6, 4), 0.0, False),                  # labels=None: all positions, soft only
    (3.0, 1.0, (2, 5, 4), 0.0, False),
    (2.0, 0.0, (6, 4), 0.0, True),                   # hard only
    (2.0, 0.5, (3, 5, 4), 0.4, True),                # token level with ignored positions
    (5.0, 0.7, (2, 6, 3), 0.5, True),
    (2.0, 1.0, (3, 4, 5), 0.3, True),                # soft only, labels give the mask
]


@pytest.mark.parametrize("T,alpha,shape,ignore,with_labels", VALUE_CASES)
def test_value_matches_numpy(T, alpha, shape, ignore, with_labels):
    z, v, y = make_case(shape, ignore, seed=len(shape) * 10 + int(T * 7) + int(alpha * 3))
    got = distillation_loss(T_(z.astype(np.float32)), T_(v.astype(np.float32)),
                            T_(y) if with_labels else None, temperature=T, alpha=alpha)
    assert got.shape == ()
    want = np_distill(z.astype(np.float32), v.astype(np.float32), y if with_labels else None,
                      T, alpha)
    np.testing.assert_allclose(got.item(), want, rtol=2e-5, atol=1e-6)


def test_custom_ignore_index():
    z, v, y = make_case((4, 5, 3), 0.0, seed=3)
    y[:, 3:] = 7                                     # 7 marks padding here (> num classes)
    got = distillation_loss(T_(z), T_(v), T_(y), temperature=2.0, alpha=0.5, ignore_index=7)
    np.testing.assert_allclose(got.item(), np_distill(z, v, y, 2.0, 0.5, ignore=7), rtol=1e-6)


@pytest.mark.parametrize("T,alpha,shape,ignore", [(2.0, 0.5, (4, 5), 0.0),
                                                  (3.0, 1.0, (2, 4, 3), 0.3),
                                                  (0.7, 0.2, (2, 3, 4), 0.5)])
def test_gradcheck_wrt_student(float64, T, alpha, shape, ignore):
    z, v, y = make_case(shape, ignore, seed=11)
    zt = T_(z, requires_grad=True)
    vt, yt = T_(v), T_(y)
    assert mm.gradcheck(lambda s: distillation_loss(s, vt, yt, temperature=T, alpha=alpha), [zt])


def test_gradient_matches_numpy_formula(float64):
    """d loss / dz = alpha T (q - p) / n  +  (1 - alpha) (softmax(z) - onehot) / n, kept rows."""
    T, alpha = 3.0, 0.6
    z, v, y = make_case((3, 4, 5), 0.3, seed=5)
    zt = T_(z, requires_grad=True)
    distillation_loss(zt, T_(v), T_(y), temperature=T, alpha=alpha).backward()
    zz, vv, yy = z.reshape(-1, 5), v.reshape(-1, 5), y.reshape(-1)
    keep = yy != -100
    n = keep.sum()
    q, p = np.exp(np_log_softmax(zz / T)), np.exp(np_log_softmax(vv / T))
    s = np.exp(np_log_softmax(zz))
    onehot = np.zeros_like(zz)
    onehot[np.arange(len(yy))[keep], yy[keep]] = 1
    want = (alpha * T * (q - p) + (1 - alpha) * (s - onehot)) * keep[:, None] / n
    np.testing.assert_allclose(zt.grad.numpy(), want.reshape(z.shape), atol=1e-12)


def test_teacher_gets_no_gradient():
    z, v, y = make_case((5, 4), 0.0, seed=2)
    zt = T_(z.astype(np.float32), requires_grad=True)
    vt = T_(v.astype(np.float32), requires_grad=True)   # as if it came out of a live model
    loss = distillation_loss(zt, vt, T_(y), temperature=2.0, alpha=0.5)
    loss.backward()
    assert vt.grad is None
    assert zt.grad is not None and np.abs(zt.grad.numpy()).sum() > 0


def test_alpha_zero_is_plain_cross_entropy():
    z, v, y = make_case((2, 5, 4), 0.3, seed=9)
    v_other = np.random.default_rng(1).standard_normal(v.shape) * 10   # the teacher is irrelevant
    zt = T_(z.astype(np.float32), requires_grad=True)
    loss = distillation_loss(zt, T_(v_other.astype(np.float32)), T_(y), temperature=3.0, alpha=0.0)
    keep = y.reshape(-1) != -100
    zz = z.reshape(-1, 4)[keep].astype(np.float32).astype(np.float64)
    want = -np_log_softmax(zz)[np.arange(keep.sum()), y.reshape(-1)[keep]].mean()
    np.testing.assert_allclose(loss.item(), want, rtol=1e-5)
    ref = F.cross_entropy(T_(z.astype(np.float32)), T_(y))
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-6)


def test_temperature_squared_keeps_the_soft_gradient_scale(float64):
    """The soft gradient is T (q - p) / n; for zero-mean logits and large T it tends to
    (z - v) / (n C), independent of T -- thanks to the T^2 factor (without it: 1 / T^2)."""
    r = np.random.default_rng(0)
    n, c = 8, 6
    z, v = r.standard_normal((n, c)), r.standard_normal((n, c))
    z -= z.mean(axis=1, keepdims=True)
    v -= v.mean(axis=1, keepdims=True)
    limit = (z - v) / (n * c)
    norms = {}
    for T in (1.0, 5.0, 20.0, 100.0):
        zt = T_(z, requires_grad=True)
        loss = distillation_loss(zt, T_(v), temperature=T, alpha=1.0)
        loss.backward()
        g = zt.grad.numpy()
        q, p = np.exp(np_log_softmax(z / T)), np.exp(np_log_softmax(v / T))
        np.testing.assert_allclose(g, T * (q - p) / n, atol=1e-12)           # exact formula
        # the loss itself: T^2 KL -> sum (z - v)^2 / (2 C) / n at high temperature
        if T >= 20:
            np.testing.assert_allclose(g, limit, rtol=0, atol=0.1 * np.abs(limit).max() * 20 / T)
            np.testing.assert_allclose(loss.item(), ((z - v) ** 2).sum() / (2 * c * n),
                                       rtol=0.1 * 20 / T)
        norms[T] = np.linalg.norm(g)
    # comparable across temperatures: within 15% between T=5 and T=100 (a 400x ratio w/o T^2)
    assert 0.85 < norms[100.0] / norms[5.0] < 1.15


@pytest.mark.parametrize("shape,with_labels", [((6, 5), False), ((2, 4, 3), True)])
def test_student_equal_teacher_gives_zero(shape, with_labels):
    z, _, y = make_case(shape, 0.3 if len(shape) == 3 else 0.0, seed=4)
    zt = T_(z.astype(np.float32), requires_grad=True)
    loss = distillation_loss(zt, T_(z.astype(np.float32)), T_(y) if with_labels else None,
                             temperature=2.5, alpha=1.0)
    loss.backward()
    assert abs(loss.item()) < 1e-6
    np.testing.assert_allclose(zt.grad.numpy(), 0.0, atol=1e-7)


# -- errors ---------------------------------------------------------------------------------------
def _err_case(kind):
    z, v, y = make_case((4, 3), 0.0, seed=0)
    z32, v32 = z.astype(np.float32), v.astype(np.float32)
    cases = {
        "shape": lambda: distillation_loss(T_(z32), T_(np.zeros((4, 5), np.float32)), T_(y)),
        "shape-rows": lambda: distillation_loss(T_(z32), T_(v32[:3]), T_(y)),
        "ndim": lambda: distillation_loss(T_(z32[0]), T_(v32[0]), None, alpha=1.0),
        "T0": lambda: distillation_loss(T_(z32), T_(v32), T_(y), temperature=0.0),
        "Tneg": lambda: distillation_loss(T_(z32), T_(v32), T_(y), temperature=-1.0),
        "Tstr": lambda: distillation_loss(T_(z32), T_(v32), T_(y), temperature="2"),
        "alpha>1": lambda: distillation_loss(T_(z32), T_(v32), T_(y), alpha=1.5),
        "alpha<0": lambda: distillation_loss(T_(z32), T_(v32), T_(y), alpha=-0.1),
        "no-labels": lambda: distillation_loss(T_(z32), T_(v32), None, alpha=0.5),
        "labels-shape": lambda: distillation_loss(T_(z32), T_(v32), T_(y[:3])),
        "labels-float": lambda: distillation_loss(T_(z32), T_(v32), T_(y.astype(np.float32))),
        "labels-array": lambda: distillation_loss(T_(z32), T_(v32), y),
        "labels-range": lambda: distillation_loss(T_(z32), T_(v32), T_(np.array([0, 1, 3, 2])),
                                                  alpha=1.0).item(),
        "not-tensor": lambda: distillation_loss(z32, T_(v32), T_(y)),
        "int-logits": lambda: distillation_loss(T_(y[:, None].repeat(3, 1)), T_(v32), T_(y)),
        "dtype": lambda: distillation_loss(T_(z32), T_(v), T_(y)),
    }
    return cases[kind]


ERRORS = [("shape", ValueError, "same shape"), ("shape-rows", ValueError, "same shape"),
          ("ndim", ValueError, r"\(N, C\)"), ("T0", ValueError, "temperature"),
          ("Tneg", ValueError, "temperature"), ("Tstr", TypeError, "temperature"),
          ("alpha>1", ValueError, "alpha"), ("alpha<0", ValueError, "alpha"),
          ("no-labels", ValueError, "alpha must be 1"),
          ("labels-shape", ValueError, "labels shape"),
          ("labels-float", TypeError, "integer"), ("labels-array", TypeError, "Tensor"),
          ("labels-range", ValueError, r"found \[3\]"), ("not-tensor", TypeError, "Tensor"),
          ("int-logits", TypeError, "floating"), ("dtype", TypeError, "astype")]


@pytest.mark.parametrize("kind,exc,match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(kind, exc, match):
    with pytest.raises(exc, match=match):
        _err_case(kind)()


# -- with task heads and the Trainer ---------------------------------------------------------------
def bert_cfg(hidden, layers, dropout=0.0):
    return BertConfig(vocab_size=13, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=2 * hidden,
                      max_position_embeddings=8, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout, pad_token_id=0).to_dict()


def head(cls, hidden, layers, seed, dropout=0.0, scale=0.3, **kw):
    """A task model on a tiny BERT body, its weights perturbed (non-trivial logits)."""
    mm.manual_seed(seed)
    model = cls(cls.config_class(base_model_type="bert", base_config=bert_cfg(hidden, layers,
                                                                               dropout),
                                 classifier_dropout=dropout, **kw))
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for p in model.parameters():
            p.copy_(mm.tensor(p.numpy() + scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model


def toy_batch(b=4, t=6, seed=0):
    r = np.random.default_rng(seed)
    ids = r.integers(1, 13, size=(b, t))
    lengths = r.integers(2, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    return ids, mask


def test_loss_on_sequence_classifiers_matches_numpy():
    teacher = head(ModelForSequenceClassification, 16, 2, seed=1, dropout=0.3, num_labels=3)
    student = head(ModelForSequenceClassification, 8, 1, seed=2, num_labels=3).eval()
    ids, mask = toy_batch()
    labels = np.array([0, 2, 1, 2])
    teacher.eval()
    with mm.no_grad():
        v = teacher(T_(ids), attention_mask=T_(mask)).numpy()
        z = student(T_(ids), attention_mask=T_(mask)).numpy()
    teacher.train()                                  # dropout on: DistillationLoss must turn it off
    loss_fn = DistillationLoss(teacher, temperature=3.0, alpha=0.4)
    batch = {"input_ids": T_(ids), "attention_mask": T_(mask), "labels": T_(labels)}
    loss = loss_fn(student, batch)
    np.testing.assert_allclose(loss.item(), np_distill(z, v, labels, 3.0, 0.4), rtol=1e-5)
    assert teacher.training                          # its mode is restored
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())
    assert "labels" in batch                         # the batch is not modified


def test_loss_on_token_classifiers_ignores_padding():
    teacher = head(ModelForTokenClassification, 16, 2, seed=3, num_labels=5).eval()
    student = head(ModelForTokenClassification, 8, 1, seed=4, num_labels=5).eval()
    ids, mask = toy_batch(seed=1)
    labels = np.where(mask == 1, ids % 5, -100)
    with mm.no_grad():
        v = teacher(T_(ids), attention_mask=T_(mask)).numpy()
        z = student(T_(ids), attention_mask=T_(mask)).numpy()
    batch = {"input_ids": T_(ids), "attention_mask": T_(mask), "labels": T_(labels)}
    loss = DistillationLoss(teacher, temperature=2.0, alpha=0.5)(student, batch)
    np.testing.assert_allclose(loss.item(), np_distill(z, v, labels, 2.0, 0.5), rtol=1e-5)
    # without labels: alpha must be 1; every position counts then
    batch.pop("labels")
    loss = DistillationLoss(teacher, temperature=2.0, alpha=1.0)(student, batch)
    np.testing.assert_allclose(loss.item(), np_distill(z, v, None, 2.0, 1.0), rtol=1e-5)


def test_loss_on_question_answering_averages_start_and_end():
    teacher = head(ModelForQuestionAnswering, 16, 2, seed=5).eval()
    student = head(ModelForQuestionAnswering, 8, 1, seed=6).eval()
    ids, mask = toy_batch(seed=2)
    sp, ep = np.array([0, 1, 0, 1]), np.array([1, 1, 0, -100])
    with mm.no_grad():
        vs, ve = (x.numpy() for x in teacher(T_(ids), attention_mask=T_(mask)))
        zs, ze = (x.numpy() for x in student(T_(ids), attention_mask=T_(mask)))
    batch = {"input_ids": T_(ids), "attention_mask": T_(mask), "start_positions": T_(sp),
             "end_positions": T_(ep)}
    loss = DistillationLoss(teacher, temperature=2.0, alpha=0.5)(student, batch)
    want = (np_distill(zs, vs, sp, 2.0, 0.5) + np_distill(ze, ve, ep, 2.0, 0.5)) / 2
    np.testing.assert_allclose(loss.item(), want, rtol=1e-5)


def seq_dataset(teacher, n=48, t=6, seed=0):
    """Toy examples labelled by the teacher (its argmax), so both terms can go down."""
    r = np.random.default_rng(seed)
    ids = r.integers(1, 13, size=(n, t))
    with mm.no_grad():
        labels = teacher.eval()(T_(ids)).numpy().argmax(axis=1)
    return [{"input_ids": ids[i], "attention_mask": np.ones(t, np.int64), "labels": int(labels[i])}
            for i in range(n)]


def test_trainer_distillation_reduces_the_loss(tmp_path):
    teacher = head(ModelForSequenceClassification, 16, 2, seed=7, num_labels=3, scale=0.5)
    student = head(ModelForSequenceClassification, 8, 1, seed=8, num_labels=3, scale=0.0)
    data = seq_dataset(teacher)
    teacher_before = {k: v.numpy().copy() for k, v in teacher.state_dict().items()}
    args = TrainingArguments(str(tmp_path), max_steps=40, per_device_train_batch_size=8,
                             per_device_eval_batch_size=48, learning_rate=1e-2, warmup_steps=0,
                             save_steps=None, logging_steps=5, seed=0, disable_tqdm=True)
    trainer = Trainer(student, args, train_dataset=data, eval_dataset=data,
                      compute_loss=DistillationLoss(teacher, temperature=2.0, alpha=0.5))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.7 * before, (before, after)
    logged = [h["loss"] for h in trainer.state.history if "loss" in h]
    assert logged[-1] < logged[0]
    for k, v in teacher.state_dict().items():                  # the teacher is untouched
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=k)


def test_distill_wrapper(tmp_path):
    teacher = head(ModelForSequenceClassification, 16, 2, seed=7, num_labels=3)
    student = head(ModelForSequenceClassification, 8, 1, seed=8, num_labels=3)
    data = seq_dataset(teacher, n=16)
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                             learning_rate=1e-3, save_steps=None, disable_tqdm=True)
    before = {k: v.numpy().copy() for k, v in student.state_dict().items()}
    trainer = distill(teacher, student, data, args, temperature=2.0, alpha=0.5)
    assert trainer.model is student and trainer.state.global_step == 2
    assert isinstance(trainer.compute_loss, DistillationLoss)
    assert any(not np.array_equal(v.numpy(), before[k]) for k, v in student.state_dict().items())
    with pytest.raises(TypeError, match="compute_loss"):
        distill(teacher, student, data, args, compute_loss=lambda m, b: None)


def test_distillation_loss_errors():
    teacher = head(ModelForSequenceClassification, 16, 1, seed=1, num_labels=3)
    other = head(ModelForSequenceClassification, 8, 1, seed=2, num_labels=4)
    ids, mask = toy_batch()
    batch = {"input_ids": T_(ids), "attention_mask": T_(mask), "labels": T_(np.array([0, 1, 2, 0]))}
    with pytest.raises(ValueError, match="num_labels"):
        DistillationLoss(teacher)(other, batch)
    with pytest.raises(ValueError, match="teacher itself"):
        DistillationLoss(teacher)(teacher, batch)
    with pytest.raises(ValueError, match="shares"):
        sharing = ModelForSequenceClassification.from_base(teacher.base, num_labels=3)
        DistillationLoss(teacher)(sharing, batch)
    with pytest.raises(TypeError, match="dict"):
        DistillationLoss(teacher)(other, (T_(ids), T_(np.array([0, 1, 2, 0]))))
    with pytest.raises(TypeError, match="Module"):
        DistillationLoss(lambda **kw: None)
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(teacher, temperature=0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(teacher, alpha=2)
    qa = head(ModelForQuestionAnswering, 8, 1, seed=3)
    with pytest.raises(ValueError, match="disagree"):
        DistillationLoss(head(ModelForQuestionAnswering, 16, 1, seed=4))(qa, batch)


# -- PyTorch reference ----------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("T,alpha,shape,ignore", [(2.0, 0.5, (6, 4), 0.0),
                                                  (4.0, 0.8, (3, 5, 6), 0.4),
                                                  (1.0, 1.0, (4, 3), 0.0)])
def test_matches_torch(float64, T, alpha, shape, ignore):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    z, v, y = make_case(shape, ignore, seed=21)
    c = shape[-1]
    zt = torch.tensor(z.reshape(-1, c), requires_grad=True)
    vt, yt = torch.tensor(v.reshape(-1, c)), torch.tensor(y.reshape(-1))
    keep = yt != -100
    kl = tf.kl_div(tf.log_softmax(zt / T, dim=-1), tf.log_softmax(vt / T, dim=-1),
                   reduction="none", log_target=True).sum(-1)[keep].mean()
    ref = alpha * T * T * kl + (1 - alpha) * tf.cross_entropy(zt, yt, ignore_index=-100)
    ref.backward()
    ours_z = T_(z, requires_grad=True)
    ours = distillation_loss(ours_z, T_(v), T_(y), temperature=T, alpha=alpha)
    ours.backward()
    np.testing.assert_allclose(ours.item(), ref.item(), rtol=1e-10)
    np.testing.assert_allclose(ours_z.grad.numpy().reshape(-1, c), zt.grad.numpy(), atol=1e-12)
    if not ignore:                  # (N, C) without ignored rows: PyTorch's "batchmean" itself
        bm = tf.kl_div(tf.log_softmax(zt / T, dim=-1), tf.log_softmax(vt / T, dim=-1),
                       reduction="batchmean", log_target=True)
        np.testing.assert_allclose(bm.item(), kl.item(), rtol=1e-12)
