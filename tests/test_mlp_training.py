"""A 2-layer MLP trained with Adam on a fixed synthetic task reaches a fixed accuracy."""
import numpy as np

import minillm as mm
import minillm.functional as F
from minillm import nn, optim


def xor_data(n, seed):
    """Points in [-1, 1]^2 labelled by the sign of x0 * x1: not linearly separable."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return mm.tensor(x), mm.tensor(y)


def train(model, steps=300, lr=0.02):
    x, y = xor_data(512, seed=0)
    opt = optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = xor_data(1024, seed=1)
    with mm.no_grad():
        acc = (model(xt).argmax(axis=-1) == yt).numpy().mean()
    return loss.item(), acc


def test_mlp_learns_xor_with_adam():
    mm.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    loss, acc = train(mlp)
    assert acc >= 0.95, f"held-out accuracy {acc:.3f} (loss {loss:.3f})"


def test_linear_model_cannot_learn_xor():
    """The same training loop on a linear model stays near chance: the MLP test can fail."""
    mm.manual_seed(0)
    _, acc = train(nn.Linear(2, 2))
    assert acc < 0.7


def test_training_is_deterministic_under_a_seed():
    results = []
    for _ in range(2):
        mm.manual_seed(42)
        mlp = nn.Sequential(nn.Linear(2, 16), nn.GELU(), nn.Linear(16, 2))
        results.append(train(mlp, steps=50))
    assert results[0] == results[1]
