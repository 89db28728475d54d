"""Tests of minillm.optim: optimizers, state dicts, schedulers, gradient clipping.

The update rules are checked against a straightforward NumPy float64 re-implementation
of PyTorch's documented algorithms (written here, independently of the library) and,
when PyTorch is installed, against torch.optim itself.
"""
import io
import json
import math

import numpy as np
import pytest

import minillm as mm
from minillm import optim
from minillm.backend import TRANSFERS, device_of

# -- a small model whose gradients come from a real minillm loss ------------------------------
_rng = np.random.default_rng(1234)
X = _rng.normal(size=(8, 3))
Y = _rng.uniform(-0.9, 0.9, size=(8, 4))
W0 = _rng.normal(scale=0.5, size=(3, 4))
B0 = _rng.normal(scale=0.1, size=(4,))
STEPS = 20


def mm_loss(W, b):
    """mean((tanh(X W + b) - Y)^2), built from minillm ops."""
    x, y = mm.tensor(X, dtype=W.dtype), mm.tensor(Y, dtype=W.dtype)
    r = (x @ W + b).tanh() - y
    return (r * r).mean()


def np_grads(W, b):
    """Gradients of the same loss, derived by hand in NumPy."""
    h = np.tanh(X @ W + b)
    dz = 2.0 / h.size * (h - Y) * (1.0 - h * h)
    return X.T @ dz, dz.sum(axis=0)


def make_params(dtype=np.float64, W=W0, b=B0):
    return (mm.tensor(np.asarray(W, dtype=dtype), requires_grad=True),
            mm.tensor(np.asarray(b, dtype=dtype), requires_grad=True))


# -- reference implementations (PyTorch's documented algorithms, one parameter at a time) -------
def ref_sgd(theta, g, st, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * theta
    if momentum != 0:
        if "b" not in st:
            st["b"] = g.copy()
        else:
            st["b"] = momentum * st["b"] + (1 - dampening) * g
        g = g + momentum * st["b"] if nesterov else st["b"]
    return theta - lr * g


def ref_rmsprop(theta, g, st, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    g = g + weight_decay * theta
    st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g ** 2
    v_tilde = st["v"]
    if centered:
        st["g_avg"] = alpha * st.get("g_avg", 0.0) + (1 - alpha) * g
        v_tilde = v_tilde - st["g_avg"] ** 2
    if momentum > 0:
        st["b"] = momentum * st.get("b", 0.0) + g / (np.sqrt(v_tilde) + eps)
        return theta - lr * st["b"]
    return theta - lr * g / (np.sqrt(v_tilde) + eps)


def ref_adam(theta, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             decoupled=False):
    beta1, beta2 = betas
    t = st["t"] = st.get("t", 0) + 1
    if decoupled:
        theta = theta * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * theta
    st["m"] = beta1 * st.get("m", 0.0) + (1 - beta1) * g
    st["v"] = beta2 * st.get("v", 0.0) + (1 - beta2) * g ** 2
    m_hat = st["m"] / (1 - beta1 ** t)
    v_hat = st["v"] / (1 - beta2 ** t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(theta, g, st, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    return ref_adam(theta, g, st, lr, betas, eps, weight_decay, decoupled=True)


REFERENCE = {"SGD": ref_sgd, "RMSprop": ref_rmsprop, "Adam": ref_adam, "AdamW": ref_adamw}

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.05, nesterov=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-6, momentum=0.5, centered=True,
                     weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.85, 0.99), weight_decay=0.3)),
]
CASE_IDS = [f"{name}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CASES]


def run_minillm(name, kwargs, steps=STEPS, dtype=np.float64):
    """Trajectory [(W, b) after each step] of minillm's optimizer on the tanh model."""
    W, b = make_params(dtype)
    opt = getattr(optim, name)([W, b], **kwargs)
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        mm_loss(W, b).backward()
        opt.step()
        traj.append((W.numpy(), b.numpy()))
    return traj


def run_reference(name, options, steps=STEPS):
    """The same trajectory from the NumPy reference; ``options`` = kwargs per parameter."""
    W, b = W0.copy(), B0.copy()
    states = ({}, {})
    traj = []
    for _ in range(steps):
        gW, gb = np_grads(W, b)
        W = REFERENCE[name](W, gW, states[0], **options[0])
        b = REFERENCE[name](b, gb, states[1], **options[1])
        traj.append((W, b))
    return traj


def assert_trajectories_close(got, want, rtol, atol=1e-13):
    for step, ((gw, gb), (ww, wb)) in enumerate(zip(got, want), 1):
        np.testing.assert_allclose(gw, ww, rtol=rtol, atol=atol, err_msg=f"W at step {step}")
        np.testing.assert_allclose(gb, wb, rtol=rtol, atol=atol, err_msg=f"b at step {step}")


# -- (1) trajectories vs the NumPy reference ---------------------------------------------------
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_trajectory_matches_numpy_reference(float64, name, kwargs):
    got = run_minillm(name, kwargs)
    want = run_reference(name, (kwargs, kwargs))
    assert_trajectories_close(got, want, rtol=1e-10)
    # the parameters did move: the test cannot pass with a no-op optimizer
    assert np.abs(got[-1][0] - W0).max() > 1e-3


# -- (2) trajectories vs PyTorch ---------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("name,kwargs", CASES, ids=CASE_IDS)
def test_trajectory_matches_torch(float64, name, kwargs):
    torch = pytest.importorskip("torch")
    Wt = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    xt, yt = torch.tensor(X), torch.tensor(Y)
    opt = getattr(torch.optim, name)([Wt, bt], foreach=False, **kwargs)
    want = []
    for _ in range(STEPS):
        opt.zero_grad()
        ((torch.tanh(xt @ Wt + bt) - yt) ** 2).mean().backward()
        opt.step()
        want.append((Wt.detach().numpy().copy(), bt.detach().numpy().copy()))
    assert_trajectories_close(run_minillm(name, kwargs), want, rtol=1e-6, atol=1e-12)


# -- (3) parameter groups ----------------------------------------------------------------------
@pytest.mark.parametrize("name,defaults,group0,group1", [
    ("SGD", dict(lr=0.1, momentum=0.9), dict(lr=0.05), dict(weight_decay=0.2)),
    ("Adam", dict(lr=0.01), dict(lr=0.03, weight_decay=0.1), dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.0), dict(weight_decay=0.5), dict(lr=0.002)),
    ("RMSprop", dict(lr=0.01, centered=True), dict(lr=0.003), dict(momentum=0.5)),
])
def test_param_groups_use_their_own_options(float64, name, defaults, group0, group1):
    W, b = make_params()
    opt = getattr(optim, name)([{"params": [W], **group0}, {"params": [b], **group1}],
                               **defaults)
    assert len(opt.param_groups) == 2
    for group, override in zip(opt.param_groups, (group0, group1)):
        for key, value in {**defaults, **override}.items():
            assert group[key] == value
    got = []
    for _ in range(STEPS):
        opt.zero_grad()
        mm_loss(W, b).backward()
        opt.step()
        got.append((W.numpy(), b.numpy()))
    want = run_reference(name, ({**defaults, **group0}, {**defaults, **group1}))
    assert_trajectories_close(got, want, rtol=1e-10)


def test_add_param_group_and_skipping_params_without_grad(float64):
    W, b = make_params()
    unused = mm.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([W], lr=0.01)
    opt.add_param_group({"params": [b], "lr": 0.02})
    opt.add_param_group({"params": unused})            # a single tensor is accepted here
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02, 0.01]
    for _ in range(3):
        opt.zero_grad()
        mm_loss(W, b).backward()
        opt.step()
    want = run_reference("Adam", (dict(lr=0.01), dict(lr=0.02)), steps=3)
    assert_trajectories_close([(W.numpy(), b.numpy())], want[-1:], rtol=1e-10)
    np.testing.assert_array_equal(unused.numpy(), np.ones(3))   # grad None: skipped
    assert unused not in opt.state
    assert set(opt.state_dict()["state"]) == {0, 1}


# -- step mechanics ----------------------------------------------------------------------------
def test_zero_grad_set_to_none_and_to_zeros():
    W, b = make_params(np.float32)
    opt = optim.SGD([W, b], lr=0.1)
    mm_loss(W, b).backward()
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(W.grad.numpy(), np.zeros((3, 4), np.float32))
    opt.zero_grad()
    assert W.grad is None and b.grad is None


def test_step_runs_closure_and_returns_its_loss():
    W, b = make_params(np.float32)
    opt = optim.SGD([W, b], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = mm_loss(W, b)
        loss.backward()
        return loss

    with mm.no_grad():                     # the closure still gets grad mode
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(np.mean((np.tanh(X @ W0 + B0) - Y) ** 2), rel=1e-5)
    assert not np.array_equal(W.numpy(), W0.astype(np.float32))


def test_step_bumps_version_so_stale_graphs_fail():
    W, b = make_params(np.float32)
    opt = optim.SGD([W, b], lr=0.1)
    mm_loss(W, b).backward()
    stale = mm_loss(W, b)                  # saves W at its current version
    v = W._version
    opt.step()
    assert W._version == v + 1
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        stale.backward()


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)),
    ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.1)),
    ("Adam", dict(weight_decay=0.1)),
    ("AdamW", dict()),
])
def test_step_stays_on_device_and_in_dtype(device, name, kwargs):
    W, b = make_params(np.float32)
    opt = getattr(optim, name)([W, b], **kwargs)
    mm_loss(W, b).backward()
    data_before = W.data
    before = dict(TRANSFERS)
    for _ in range(2):
        opt.step()
    assert TRANSFERS == before, "optimizer.step() moved data between host and device"
    assert W.data is data_before                # updated in place
    assert W.dtype == np.float32 and W.device == device
    for p in (W, b):
        for key, value in opt.state[p].items():
            if key == "step":
                assert value == 2 and isinstance(value, int)
            else:
                assert device_of(value) == device and value.dtype == np.float32
                assert tuple(value.shape) == p.shape


# -- (4) state_dict round trip -----------------------------------------------------------------
def through_json_and_npz(sd):
    """Write a state dict as JSON + .npz (no pickle) and read it back."""
    arrays, state = {}, {}
    for idx, entries in sd["state"].items():
        state[str(idx)] = {}
        for key, value in entries.items():
            if isinstance(value, np.ndarray):
                arrays[f"{idx}/{key}"] = value
                state[str(idx)][key] = {"npz": f"{idx}/{key}"}
            else:
                state[str(idx)][key] = value
    meta = json.dumps({"state": state, "param_groups": sd["param_groups"]})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    npz = np.load(buf, allow_pickle=False)
    loaded = json.loads(meta)
    for entries in loaded["state"].values():
        for key, value in entries.items():
            if isinstance(value, dict):
                entries[key] = npz[value["npz"]]
    return loaded


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.9))),
])
def test_state_dict_resume_is_bit_exact(name, kwargs):
    def train(W, b, opt, n):
        for _ in range(n):
            opt.zero_grad()
            mm_loss(W, b).backward()
            opt.step()

    W, b = make_params(np.float32)
    opt = getattr(optim, name)([W, b], **kwargs)
    train(W, b, opt, 10)
    sd = opt.state_dict()
    for entries in sd["state"].values():
        for value in entries.values():
            assert isinstance(value, (np.ndarray, int, float))
    snapshot = W.numpy(), b.numpy()
    train(W, b, opt, 10)                        # uninterrupted run (must not change `sd`)

    W2, b2 = make_params(np.float32, *snapshot)
    opt2 = getattr(optim, name)([W2, b2], lr=0.5)  # options come from the state dict
    opt2.load_state_dict(through_json_and_npz(sd))
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    train(W2, b2, opt2, 10)
    np.testing.assert_array_equal(W2.numpy(), W.numpy())
    np.testing.assert_array_equal(b2.numpy(), b.numpy())


def test_load_state_dict_copies_arrays():
    W, b = make_params(np.float32)
    opt = optim.Adam([W, b], lr=0.01)
    mm_loss(W, b).backward()
    opt.step()
    sd = opt.state_dict()
    saved = sd["state"][0]["exp_avg"].copy()
    opt.load_state_dict(sd)
    opt.step()
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)
    assert sd["param_groups"][0]["params"] == [0, 1]


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0], params=[])),
     "2 parameter group.*but the optimizer has 1"),
    (lambda sd: sd["param_groups"][0]["params"].pop(), "1 parameter.*but 2 in the optimizer"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((4, 3), np.float32)),
     r"'exp_avg' of parameter 0 has shape \(4, 3\), but the parameter has shape \(3, 4\)"),
    (lambda sd: sd["state"].update({7: {"step": 1}}), "state for parameter 7"),
    (lambda sd: sd.pop("state"), "keys 'state' and 'param_groups'"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "Invalid learning rate"),
    (lambda sd: sd["param_groups"][0].pop("betas"), r"lacks the option\(s\) \['betas'\]"),
])
def test_load_state_dict_validates(change, match):
    W, b = make_params(np.float32)
    opt = optim.Adam([W, b], lr=0.01)
    mm_loss(W, b).backward()
    opt.step()
    sd = opt.state_dict()
    change(sd)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)


# -- (5) schedulers ----------------------------------------------------------------------------
def _cos_factor(s, w, t, cycles=0.5):
    if s < w:
        return s / w
    progress = (s - w) / (t - w)
    return max(0.0, 0.5 * (1 + math.cos(2 * math.pi * cycles * progress)))


SCHEDULES = [
    ("LambdaLR", lambda o: optim.LambdaLR(o, lambda s: 0.9 ** s), lambda s: 0.9 ** s),
    ("StepLR", lambda o: optim.StepLR(o, step_size=4, gamma=0.5), lambda s: 0.5 ** (s // 4)),
    ("ConstantLR", lambda o: optim.ConstantLR(o, factor=0.25, total_iters=6),
     lambda s: 0.25 if s < 6 else 1.0),
    ("constant", optim.get_constant_schedule, lambda s: 1.0),
    ("constant_with_warmup", lambda o: optim.get_constant_schedule_with_warmup(o, 5),
     lambda s: min(s / 5, 1.0)),
    ("linear", lambda o: optim.get_linear_schedule_with_warmup(o, 5, 20),
     lambda s: s / 5 if s < 5 else max(0.0, (20 - s) / 15)),
    ("linear-no-warmup", lambda o: optim.get_linear_schedule_with_warmup(o, 0, 12),
     lambda s: max(0.0, (12 - s) / 12)),
    ("cosine", lambda o: optim.get_cosine_schedule_with_warmup(o, 5, 20),
     lambda s: _cos_factor(s, 5, 20)),
    ("cosine-1.5-cycles", lambda o: optim.get_cosine_schedule_with_warmup(o, 3, 20, 1.5),
     lambda s: _cos_factor(s, 3, 20, 1.5)),
    # nanoGPT's schedule: warmup, then cosine from lr down to lr / 10 (never below)
    ("cosine_with_min_lr", lambda o: optim.get_cosine_with_min_lr_schedule_with_warmup(
        o, 5, 20, min_lr_rate=0.1), lambda s: s / 5 if s < 5 else 0.1 + 0.9 * _cos_factor(s, 5, 20)),
    ("get_scheduler-cosine_with_min_lr", lambda o: optim.get_scheduler(
        "cosine_with_min_lr", o, 2, 10, scheduler_specific_kwargs={"min_lr_rate": 0.25}),
     lambda s: s / 2 if s < 2 else 0.25 + 0.75 * _cos_factor(s, 2, 10)),
    ("get_scheduler-linear", lambda o: optim.get_scheduler("linear", o, 4, 16),
     lambda s: s / 4 if s < 4 else max(0.0, (16 - s) / 12)),
    ("get_scheduler-cosine", lambda o: optim.get_scheduler("cosine", o, num_warmup_steps=2,
                                                           num_training_steps=10),
     lambda s: _cos_factor(s, 2, 10)),
    ("get_scheduler-constant_with_warmup",
     lambda o: optim.get_scheduler("constant_with_warmup", o, num_warmup_steps=3),
     lambda s: min(s / 3, 1.0)),
    ("get_scheduler-constant", lambda o: optim.get_scheduler("constant", o), lambda s: 1.0),
    ("get_scheduler-step", lambda o: optim.get_scheduler(
        "step", o, scheduler_specific_kwargs={"step_size": 3, "gamma": 0.2}),
     lambda s: 0.2 ** (s // 3)),
]


def two_group_optimizer():
    W, b = make_params(np.float32)
    return optim.SGD([{"params": [W]}, {"params": [b], "lr": 0.02}], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("make,factor", [s[1:] for s in SCHEDULES], ids=[s[0] for s in SCHEDULES])
def test_schedule_values_follow_formula(make, factor):
    opt = two_group_optimizer()
    sched = make(opt)
    for s in range(26):                        # past num_training_steps: stays clipped at 0
        if s:
            sched.step()
        want = [0.1 * factor(s), 0.02 * factor(s)]
        assert sched.get_last_lr() == pytest.approx(want, rel=1e-12, abs=1e-15), f"step {s}"
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.02]


@pytest.mark.parametrize("make", [s[1] for s in SCHEDULES], ids=[s[0] for s in SCHEDULES])
def test_scheduler_state_dict_round_trip(make):
    opt = two_group_optimizer()
    sched = make(opt)
    for _ in range(7):
        sched.step()
    osd, ssd = opt.state_dict(), json.loads(json.dumps(sched.state_dict()))
    uninterrupted = []
    for _ in range(10):
        sched.step()
        uninterrupted.append(sched.get_last_lr())

    opt2 = two_group_optimizer()
    opt2.load_state_dict(osd)
    sched2 = make(opt2)
    sched2.load_state_dict(ssd)
    assert sched2.last_epoch == 7
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in osd["param_groups"]]
    resumed = []
    for _ in range(10):
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == uninterrupted


def test_scheduler_lr_reaches_the_optimizer():
    p = mm.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=4)
    values = []
    for _ in range(4):
        opt.zero_grad()
        (p * 2.0).sum().backward()         # grad = 2
        before = p.numpy()
        opt.step()
        values.append(float(np.mean((before - p.numpy()) / 2.0)))   # = the lr used
        sched.step()
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5])


# -- (6) gradient clipping ---------------------------------------------------------------------
G1 = _rng.normal(size=(3, 4))
G2 = _rng.normal(size=(5,))


def params_with_grads(g1=G1, g2=G2, dtype=np.float32):
    """Two parameters whose gradients are exactly g1 and g2 (via a real backward)."""
    ps = []
    for g in (g1, g2):
        p = mm.tensor(np.zeros_like(g, dtype=dtype), requires_grad=True)
        (p * mm.tensor(np.asarray(g, dtype=dtype))).sum().backward()
        ps.append(p)
    return ps


def np_norm(p):
    flat = np.concatenate([G1.ravel(), G2.ravel()])
    return np.abs(flat).max() if p == math.inf else (np.abs(flat) ** p).sum() ** (1 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
def test_clip_grad_norm_clips(norm_type):
    p_val = math.inf if norm_type == "inf" else norm_type
    total = np_norm(p_val)
    max_norm = 0.3 * total
    ps = params_with_grads()
    old = ps[0].grad.data
    before = dict(TRANSFERS)
    norm = optim.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    assert TRANSFERS == before, "clip_grad_norm_ synchronised with the host"
    assert isinstance(norm, mm.Tensor) and norm.shape == ()
    assert norm.item() == pytest.approx(total, rel=1e-5)
    coef = max_norm / (total + 1e-6)
    np.testing.assert_allclose(ps[0].grad.numpy(), G1 * coef, rtol=1e-5)
    np.testing.assert_allclose(ps[1].grad.numpy(), G2 * coef, rtol=1e-5)
    # out of place: the old gradient array is untouched
    np.testing.assert_allclose(mm.backend.to_host(old), G1.astype(np.float32))
    # after clipping the norm is max_norm
    clipped = np.concatenate([ps[0].grad.numpy().ravel(), ps[1].grad.numpy().ravel()])
    got = np.abs(clipped).max() if p_val == math.inf else (np.abs(clipped) ** p_val).sum() ** (
        1 / p_val)
    assert got == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_leaves_small_gradients_alone(norm_type):
    ps = params_with_grads()
    norm = optim.clip_grad_norm_(iter(ps), 2 * np_norm(norm_type), norm_type)
    assert norm.item() == pytest.approx(np_norm(norm_type), rel=1e-5)
    np.testing.assert_array_equal(ps[0].grad.numpy(), G1.astype(np.float32))
    np.testing.assert_array_equal(ps[1].grad.numpy(), G2.astype(np.float32))


def test_clip_grad_norm_float64_and_missing_grads(float64):
    ps = params_with_grads(dtype=np.float64)
    no_grad = mm.tensor(np.ones(2), requires_grad=True)
    norm = optim.clip_grad_norm_(ps + [no_grad], 1.0)
    assert norm.dtype == np.float64
    assert norm.item() == pytest.approx(np_norm(2.0), rel=1e-12)
    coef = 1.0 / (np_norm(2.0) + 1e-6)
    np.testing.assert_allclose(ps[1].grad.numpy(), G2 * coef, rtol=1e-12)
    assert no_grad.grad is None
    assert optim.clip_grad_norm_([no_grad], 1.0).item() == 0.0


def test_clip_grad_norm_nonfinite():
    ps = params_with_grads(g2=np.array([1.0, np.nan, 0.0, 0.0, 0.0]))
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    assert math.isnan(optim.clip_grad_norm_(ps, 1.0).item())


def test_clip_grad_value():
    ps = params_with_grads()
    optim.clip_grad_value_(ps, 0.5)
    np.testing.assert_array_equal(ps[0].grad.numpy(), np.clip(G1, -0.5, 0.5).astype(np.float32))
    np.testing.assert_array_equal(ps[1].grad.numpy(), np.clip(G2, -0.5, 0.5).astype(np.float32))


# -- (7) errors --------------------------------------------------------------------------------
def _p(shape=(2,)):
    return mm.tensor(np.ones(shape), requires_grad=True)


def _two_groups_same_param():
    p = _p()
    return optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def _overlapping_add_param_group():
    p = _p()
    opt = optim.SGD([p], lr=0.1)
    opt.add_param_group({"params": [_p(), p]})


def _resume_without_initial_lr():
    optim.StepLR(optim.SGD([_p()], lr=0.1), step_size=2, last_epoch=3)


ERRORS = [
    (lambda: optim.SGD([_p()], lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
    (lambda: optim.SGD([_p()]), ValueError, "required option 'lr'"),
    (lambda: optim.SGD([_p()], lr=0.1, momentum=-1), ValueError, "Invalid momentum value"),
    (lambda: optim.SGD([_p()], lr=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: optim.SGD([_p()], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires"),
    (lambda: optim.SGD([_p()], lr=0.1, weight_decay=-1e-4), ValueError, "Invalid weight_decay"),
    (lambda: optim.Adam([_p()], betas=(1.0, 0.999)), ValueError,
     "Invalid beta parameter at index 0: 1.0"),
    (lambda: optim.Adam([_p()], betas=(0.9, -0.5)), ValueError, "beta parameter at index 1"),
    (lambda: optim.AdamW([_p()], betas=(0.9,)), ValueError, "betas must be a pair"),
    (lambda: optim.Adam([_p()], eps=-1e-8), ValueError, "Invalid epsilon value"),
    (lambda: optim.Adam([_p()], lr=float("nan")), ValueError, "Invalid learning rate"),
    (lambda: optim.AdamW([_p()], weight_decay=-0.1), ValueError, "Invalid weight_decay"),
    (lambda: optim.RMSprop([_p()], alpha=1.5), ValueError, "Invalid alpha value"),
    (lambda: optim.RMSprop([_p()], eps=-1.0), ValueError, "Invalid epsilon value"),
    (lambda: optim.Adam([]), ValueError, "empty parameter list"),
    (lambda: optim.Adam(_p()), TypeError, "single Tensor"),
    (lambda: optim.Adam({_p()}), TypeError, "not a set"),
    (lambda: optim.Adam([np.ones(2)]), TypeError, "can only optimize minillm Tensors"),
    (lambda: optim.Adam([mm.tensor(np.ones(2))]), ValueError, "does not require grad"),
    (lambda: optim.Adam([_p() * 2]), ValueError, "not a leaf"),
    (_two_groups_same_param, ValueError, "more than one parameter group"),
    (_overlapping_add_param_group, ValueError, "more than one parameter group"),
    (lambda: optim.Adam([{"params": [_p()]}, {"params": [_p()], "lr": -1}]), ValueError,
     "Invalid learning rate in parameter group 1"),
    (lambda: optim.Adam([{"params": [_p()], "weight_deacy": 0.1}]), ValueError,
     r"unknown option\(s\) \['weight_deacy'\]"),
    (lambda: optim.Adam([{"lr": 0.1}]), ValueError, "needs a 'params' key"),
    (lambda: (lambda p: optim.Adam([p, p]))(_p()), ValueError, "appears twice"),
    (lambda: optim.StepLR(optim.SGD([_p()], lr=0.1), step_size=0), ValueError, "step_size"),
    (lambda: optim.ConstantLR(optim.SGD([_p()], lr=0.1), factor=2.0), ValueError,
     "between 0 and 1"),
    (lambda: optim.LambdaLR(optim.SGD([_p()], lr=0.1), [lambda s: 1, lambda s: 1]),
     ValueError, "expected 1 lr_lambdas"),
    (lambda: optim.LambdaLR("not an optimizer", lambda s: 1), TypeError, "expects a minillm"),
    (_resume_without_initial_lr, KeyError, "initial_lr"),
    (lambda: optim.get_scheduler("exponential", optim.SGD([_p()], lr=0.1)), ValueError,
     "unknown scheduler 'exponential'"),
    (lambda: optim.get_scheduler("linear", optim.SGD([_p()], lr=0.1), 10), ValueError,
     "linear requires `num_training_steps`"),
    (lambda: optim.get_scheduler("constant", optim.SGD([_p()], lr=0.1), 10), ValueError,
     "constant_with_warmup"),
    (lambda: optim.get_scheduler("step", optim.SGD([_p()], lr=0.1)), ValueError, "step_size"),
    (lambda: optim.get_scheduler("cosine_with_min_lr", optim.SGD([_p()], lr=0.1), 1, 10),
     ValueError, "exactly one of min_lr_rate"),
    (lambda: optim.get_cosine_with_min_lr_schedule_with_warmup(optim.SGD([_p()], lr=0.1), 1, 10,
                                                               min_lr_rate=1.5),
     ValueError, r"min_lr_rate must be a number in \[0, 1\]"),
    (lambda: optim.get_linear_schedule_with_warmup(optim.SGD([_p()], lr=0.1), -1, 10),
     ValueError, "num_warmup_steps must be an integer >= 0"),
    (lambda: optim.clip_grad_norm_([_p()], -1.0), ValueError, "max_norm"),
    (lambda: optim.clip_grad_norm_([_p()], 1.0, norm_type=0), ValueError, "norm_type"),
    (lambda: optim.clip_grad_value_([_p()], -1.0), ValueError, "clip_value"),
]


@pytest.mark.parametrize("make,exc,match", ERRORS, ids=[f"error{i}" for i in range(len(ERRORS))])
def test_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_exports():
    for name in ("SGD", "RMSprop", "Adam", "AdamW", "Optimizer", "clip_grad_norm_",
                 "clip_grad_value_", "lr_scheduler", "LambdaLR", "StepLR", "ConstantLR",
                 "get_constant_schedule", "get_constant_schedule_with_warmup",
                 "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup",
                 "get_cosine_with_min_lr_schedule_with_warmup", "get_scheduler"):
        assert hasattr(optim, name), name
    assert optim.lr_scheduler.get_scheduler is optim.get_scheduler


def test_optimizer_state_follows_the_model_to_another_device():
    """Adam's moments move with the parameters after model.to(); the trajectory is unchanged."""
    from minillm import nn
    import minillm.functional as F

    def run(move_after):
        mm.manual_seed(0)
        model = nn.Linear(3, 2, device="cpu")
        opt = mm.optim.Adam(model.parameters(), lr=0.1)
        x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
        for step in range(4):
            if step == move_after:
                model.to("fake")
            xt = mm.tensor(x, device=model.weight.device)
            opt.zero_grad()
            F.mse_loss(model(xt), mm.zeros(4, 2, device=model.weight.device)).backward()
            opt.step()
        assert all(str(device_of(v)) == str(model.weight.device)
                   for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))
        return model.weight.numpy()

    np.testing.assert_array_equal(run(move_after=2), run(move_after=99))
