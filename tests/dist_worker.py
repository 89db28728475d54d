"""The MPI side of tests/test_distributed.py (not a test module itself).

    mpiexec -n 2 python tests/dist_worker.py OUT

Each rank (1) exercises the collectives of :mod:`minillm.distributed` on rank-dependent
arrays and saves what it got (``OUT/unit_rank{r}.npz`` / ``.json``), then (2) trains a tiny
float64 MLP data-parallel with the Trainer, each rank writing into its own ``output_dir``
(``OUT/run/rank{r}``) so the test can see that only rank 0 wrote files, and (3) resumes that
run from rank 0's ``checkpoint-2``. Final weights go to ``OUT/params_{run}_rank{r}.npz``.
The test runs :func:`train` in one process with the global batch and compares. The device is
``$MINILLM_TEST_DEVICE`` (default cpu), like the rest of the suite.
"""
import json
import os
import sys

import numpy as np

import minillm as mm
import minillm.functional as F
from minillm import distributed
from minillm.training import Trainer, TrainingArguments

N_TRAIN, N_EVAL, N_FEATURES, N_CLASSES = 22, 7, 4, 3
BATCH = 2                       # per rank; global batch 4 -> batches 4,4,4,4,4,2 per epoch


class MLP(mm.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = mm.nn.Linear(N_FEATURES, 8)
        self.fc2 = mm.nn.Linear(8, N_CLASSES)

    def forward(self, x, y):
        logits = self.fc2(F.gelu(self.fc1(x)))
        return logits, F.cross_entropy(logits, y)


def datasets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_EVAL, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=N_TRAIN + N_EVAL)
    examples = [(x[i], y[i]) for i in range(len(y))]
    return examples[:N_TRAIN], examples[N_TRAIN:]


def train(output_dir, batch_size, data_parallel, model_seed, resume=None, device=None):
    """Train the MLP for 2 epochs (6 steps of 2 accumulated batches); returns the Trainer."""
    mm.set_default_dtype(np.float64)
    mm.manual_seed(model_seed)
    model = MLP()
    args = TrainingArguments(str(output_dir), num_train_epochs=2,
                             per_device_train_batch_size=batch_size,
                             per_device_eval_batch_size=3, learning_rate=0.1, warmup_steps=0,
                             weight_decay=0.1, max_grad_norm=0.5, gradient_accumulation_steps=2,
                             eval_steps=3, save_steps=2, logging_steps=1, seed=7,
                             disable_tqdm=True, data_parallel=data_parallel, device=device)
    train_set, eval_set = datasets()
    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def host_state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def unit_checks(group, out):
    """Collectives on arrays whose values depend on the rank (the test recomputes them)."""
    r = group.rank
    rng = np.random.default_rng(100 + r)
    dev = mm.get_default_device()
    host = {"a64": rng.normal(size=(3, 2)), "a32": rng.normal(size=5).astype(np.float32),
            "a16": rng.normal(size=(2, 2)).astype(np.float16),
            "b64": rng.normal(size=4), "b32": rng.normal(size=(2, 3)).astype(np.float32)}
    arr = {k: mm.tensor(v, dtype=v.dtype, device=dev) for k, v in host.items()}
    group.allreduce_mean_([arr["a64"], arr["a32"].data, arr["a16"]])   # Tensors and arrays
    group.broadcast_([arr["b64"], arr["b32"]], root=1)
    results = {k: t.numpy() for k, t in arr.items()}
    np.savez(os.path.join(out, f"unit_rank{r}.npz"), **results)
    info = {"rank": r, "world_size": group.world_size, "is_main": distributed.is_main(),
            "sum": group.allreduce_sum([r + 1, 0.5])}
    errors = {}
    mismatch = [mm.tensor(np.ones(3), device=dev)] * (1 if r == 0 else 2)
    for name, call in (("mismatch", lambda: group.allreduce_mean_(mismatch)),
                       ("int", lambda: group.allreduce_mean_([mm.tensor(np.arange(3))])),
                       ("single", lambda: group.allreduce_mean_(mm.tensor(np.ones(2)))),
                       ("root", lambda: group.broadcast_([mm.tensor(np.ones(2))], root=5))):
        try:
            call()
            errors[name] = None
        except (TypeError, ValueError) as e:
            errors[name] = f"{type(e).__name__}: {e}"
    info["errors"] = errors
    group.barrier()
    with open(os.path.join(out, f"unit_rank{r}.json"), "w", encoding="utf-8") as f:
        json.dump(info, f)


def main(out):
    device = os.environ.get("MINILLM_TEST_DEVICE") or None
    if device:
        mm.set_default_device(device)
    group = distributed.init("mpi")
    r = group.rank
    unit_checks(group, out)
    # every rank initialises differently: the Trainer's broadcast must make them agree
    run = train(os.path.join(out, "run", f"rank{r}"), BATCH, "mpi", 100 + r, device=device)
    np.savez(os.path.join(out, f"params_run_rank{r}.npz"), **host_state(run.model))
    with open(os.path.join(out, f"history_run_rank{r}.json"), "w", encoding="utf-8") as f:
        json.dump(run.state.history, f)
    ckpt = os.path.join(out, "run", "rank0", "checkpoint-2")
    resumed = train(os.path.join(out, "resume", f"rank{r}"), BATCH, "mpi", 200 + r,
                    resume=ckpt, device=device)
    np.savez(os.path.join(out, f"params_resume_rank{r}.npz"), **host_state(resumed.model))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mpiexec -n 2 python tests/dist_worker.py OUT_DIR")
    main(sys.argv[1])
