"""Data-parallel training over MPI (minillm.distributed + Trainer(data_parallel=...)).

The two-process part runs ``mpiexec -n 2 python tests/dist_worker.py OUT`` once and checks
what the ranks saved against independent NumPy computations and against one process that
trains with the global batch. It skips (with the reason) when mpi4py or mpiexec is missing:
``pip install mpi4py mpich``. NCCL (backend="nccl") needs one GPU per rank: untested here.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minillm import distributed
from minillm.training import TrainingArguments

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dist_worker.py"


def _mpiexec():
    local = Path(sys.executable).parent / "mpiexec"      # the mpich wheel puts it next to python
    return str(local) if local.exists() else shutil.which("mpiexec")


def _skip_reason():
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if _mpiexec() is None:
        return "no mpiexec found (pip install mpich, or install an MPI runtime)"
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _load_worker():
    spec = importlib.util.spec_from_file_location("dist_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mpi_run(tmp_path_factory):
    """Run the worker on 2 processes once; the folder it wrote."""
    out = tmp_path_factory.mktemp("mpi")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if hasattr(os, "geteuid") and os.geteuid() == 0:     # Open MPI refuses root without these
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(WORKER), str(out)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, no MPI, batch 2 * BATCH: what the 2-rank run must reproduce."""
    worker = _load_worker()
    out = tmp_path_factory.mktemp("single")
    device = os.environ.get("MINILLM_TEST_DEVICE") or None
    trainer = worker.train(out, 2 * worker.BATCH, None, 100, device=device)
    return {"params": worker.host_state(trainer.model), "history": trainer.state.history}


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# -- without MPI ---------------------------------------------------------------------------
@pytest.mark.parametrize("env,expected", [({}, 1), ({"PMI_SIZE": "4"}, 4),
                                          ({"OMPI_COMM_WORLD_SIZE": "3"}, 3)])
def test_launched_world_size_reads_the_launcher_environment(monkeypatch, env, expected):
    for name in distributed._SIZE_VARS:
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.launched_world_size() == expected


@pytest.mark.parametrize("value", ["gloo", "MPI", 1, True])
def test_bad_data_parallel_argument_is_a_clear_error(tmp_path, value):
    with pytest.raises(ValueError, match="data_parallel"):
        TrainingArguments(str(tmp_path), data_parallel=value)


def test_init_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        distributed.init("gloo")


def test_single_process_without_init_is_main():
    if distributed.is_initialized():
        pytest.skip("a group was initialised in this process")
    assert distributed.is_main()
    with pytest.raises(RuntimeError, match="init"):
        distributed.allreduce_mean_([np.ones(2)])


# -- two processes -------------------------------------------------------------------------
@needs_mpi
def test_collectives_match_numpy(mpi_run):
    draws = []
    for r in range(2):                       # the worker's rank-dependent arrays, redrawn
        rng = np.random.default_rng(100 + r)
        draws.append({"a64": rng.normal(size=(3, 2)), "a32": rng.normal(size=5).astype(np.float32),
                      "a16": rng.normal(size=(2, 2)).astype(np.float16),
                      "b64": rng.normal(size=4),
                      "b32": rng.normal(size=(2, 3)).astype(np.float32)})
    tol = {"a64": 1e-15, "a32": 1e-7, "a16": 1e-3}
    for r in range(2):
        got = _load(mpi_run / f"unit_rank{r}.npz")
        for k, atol in tol.items():
            want = (draws[0][k].astype(np.float64) + draws[1][k].astype(np.float64)) / 2
            assert got[k].dtype == draws[0][k].dtype
            np.testing.assert_allclose(got[k].astype(np.float64), want, atol=atol, err_msg=k)
        for k in ("b64", "b32"):             # broadcast from root 1
            np.testing.assert_array_equal(got[k], draws[1][k], err_msg=k)


@needs_mpi
def test_group_facts_and_errors_on_every_rank(mpi_run):
    for r in range(2):
        info = json.loads((mpi_run / f"unit_rank{r}.json").read_text(encoding="utf-8"))
        assert (info["rank"], info["world_size"], info["is_main"]) == (r, 2, r == 0)
        assert info["sum"] == [3.0, 1.0]
        e = info["errors"]
        assert e["mismatch"].startswith("ValueError") and "different lists" in e["mismatch"]
        assert e["int"].startswith("TypeError") and "int64" in e["int"]
        assert e["single"].startswith("TypeError") and "[x]" in e["single"]
        assert e["root"].startswith("ValueError") and "root" in e["root"]


@needs_mpi
def test_two_ranks_reproduce_one_process_with_the_global_batch(mpi_run, reference):
    ref = reference["params"]
    clipped = [h["grad_norm"] > 0.5 for h in reference["history"] if "grad_norm" in h]
    assert any(clipped), "the test should exercise gradient clipping"
    ranks = [_load(mpi_run / f"params_run_rank{r}.npz") for r in range(2)]
    for name, want in ref.items():
        assert np.abs(want - _load_init(name)).max() > 1e-3      # training moved it
        for r in range(2):
            np.testing.assert_allclose(ranks[r][name], want, rtol=0, atol=1e-10,
                                       err_msg=f"rank {r}: {name}")
    ckpt = _load(mpi_run / "run" / "rank0" / "checkpoint-6" / "model.npz")
    for name, want in ref.items():
        np.testing.assert_allclose(ckpt[name], want, rtol=0, atol=1e-10, err_msg=name)


def _load_init(name):
    """The reference model's initial weight ``name`` (same seed, no training)."""
    import minillm as mm
    worker = _load_worker()
    mm.set_default_dtype(np.float64)
    mm.manual_seed(100)
    return worker.host_state(worker.MLP())[name]


@needs_mpi
def test_logged_losses_and_evaluations_are_the_global_ones(mpi_run, reference):
    for r in range(2):
        hist = json.loads((mpi_run / f"history_run_rank{r}.json").read_text(encoding="utf-8"))
        assert len(hist) == len(reference["history"])
        for got, want in zip(hist, reference["history"]):
            assert got.keys() == want.keys()
            for k, v in want.items():
                assert got[k] == pytest.approx(v, rel=1e-10, abs=1e-12), (r, k)


@needs_mpi
def test_only_rank_0_writes_files(mpi_run):
    main = mpi_run / "run" / "rank0"
    assert sorted(p.name for p in main.glob("checkpoint-*")) == \
        ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert (main / "history.json").exists()
    for run in ("run", "resume"):
        assert not (mpi_run / run / "rank1").exists()


@needs_mpi
def test_resume_on_every_rank_ends_like_the_uninterrupted_run(mpi_run):
    full = _load(mpi_run / "params_run_rank0.npz")
    for r in range(2):
        resumed = _load(mpi_run / f"params_resume_rank{r}.npz")
        for name, want in full.items():
            np.testing.assert_allclose(resumed[name], want, rtol=0, atol=1e-12,
                                       err_msg=f"rank {r}: {name}")
