"""``minillm finetune --method ...``, ``--teacher``, ``--augment``, ``--layer-lr-decay`` and
``minillm evaluate --quantize/--prune``: the fine-tuning methods of ``minillm.finetune``
wired into the task recipes, checked by what they leave in the saved weights."""
import json
import os

import numpy as np
import pytest

import minillm as mm
from minillm.apps import tasks

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
WORDS = ["ROMEO", "JULIET", "the king", "a fool", "my lord", "the queen", "good night", "sir"]


from test_cli import run  # noqa: E402  (minillm argv... in-process)


def tsv(path, n, seed):
    r = np.random.default_rng(seed)
    rows = ["text\tlabel"]
    for i in range(n):
        good = bool(r.integers(2))
        rows.append(f"{WORDS[r.integers(len(WORDS))]} is {'good' if good else 'bad'}\t"
                    f"{'pos' if good else 'neg'}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from minillm import datasets as D
    for rf in D.get_spec("tinyshakespeare").files:
        if not any(os.path.isfile(p) for p in D.candidate_paths(rf)):
            pytest.skip("tinyshakespeare is not available locally (set MINILLM_DATA)")
    root = tmp_path_factory.mktemp("methods")
    rc, _, err = run("pretrain", "--model-type", "bert", "--fast", "--n-layer", 2,
                     "--device", DEVICE, "--output-dir", root / "bert", "--no-progress")
    assert rc == 0, err
    return root, tsv(root / "train.tsv", 40, 0), tsv(root / "test.tsv", 16, 1)


def finetune(setup, name, *extra):
    root, train, test = setup
    out = root / name
    rc, text, err = run("finetune", "--task", "classification", "--train", train, "--test", test,
                        "--fast", "--device", DEVICE, "--output-dir", out, "--no-progress",
                        *extra)
    assert rc == 0, err
    return out, text, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def body_change(setup, out):
    """Which pretrained body weights the fine-tuned model changed (by name, 'base.' dropped)."""
    before = weights(setup[0] / "bert" / "model" / "model.npz")
    after = weights(out / "model" / "model.npz")
    changed = {}
    for k, v in before.items():
        if not k.startswith("bert."):
            continue                                  # the MLM head is not part of the body
        name = k[len("bert."):]
        changed[name] = not np.array_equal(v, after["base." + name])
    return changed


def test_full_fine_tuning_changes_every_body_matrix(setup):
    out, text, m = finetune(setup, "full", "--model", setup[0] / "bert" / "model")
    assert "method: full" in text and m["trainable_fraction"] == 1.0
    changed = body_change(setup, out)
    assert all(changed[k] for k in changed if k.endswith("dense.weight"))


def test_head_only_leaves_the_body_as_pretrained(setup):
    out, _, m = finetune(setup, "head", "--model", setup[0] / "bert" / "model",
                         "--method", "head-only")
    assert not any(body_change(setup, out).values())
    # classifier: hidden 32 -> 2 labels (a masked-LM body has no pooler: [CLS] feeds it)
    assert m["trainable_parameters"] == 2 * 32 + 2


def test_freeze_keeps_embeddings_and_the_first_block(setup):
    out, _, _ = finetune(setup, "freeze", "--model", setup[0] / "bert" / "model",
                         "--method", "freeze", "--freeze-layers", 1)
    changed = body_change(setup, out)
    assert not any(v for k, v in changed.items()
                   if k.startswith(("embeddings.", "encoder.layer.0.")))
    assert all(v for k, v in changed.items()
               if k.startswith("encoder.layer.1.") and k.endswith("weight"))


def test_lora_changes_only_query_and_value_and_saves_adapters(setup):
    out, text, m = finetune(setup, "lora", "--model", setup[0] / "bert" / "model",
                            "--method", "lora", "--lora-r", 2)
    changed = {k: v for k, v in body_change(setup, out).items() if v}
    assert changed and all(k.endswith(("query.weight", "value.weight")) for k in changed)
    lora_params = 2 * 2 * (32 * 2 + 2 * 32)            # 2 layers x (q, v) x (A + B)
    assert m["trainable_parameters"] == lora_params + 2 * 32 + 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    # the adapters on the pretrained body, merged, are the saved model
    body = mm.models.load_model(setup[0] / "bert" / "model").bert
    model = mm.models.ModelForSequenceClassification.from_base(body, num_labels=2,
                                                               label_names=["neg", "pos"])
    mm.finetune.load_adapters(model, out / "adapter")
    mm.finetune.remove_lora(model, merge=True)
    saved = weights(out / "model" / "model.npz")
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(np.asarray(v.numpy() if hasattr(v, "numpy") else v),
                                   saved[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_layerwise_lr_decay_groups_follow_depth(setup, tmp_path):
    (tmp_path / "x.tsv").write_text("text\tlabel\na\t0\nb\t1\n", encoding="utf-8")
    cfg = tasks.FinetuneConfig(task="classification", train=str(tmp_path / "x.tsv"),
                               layer_lr_decay=0.5)       # (files are checked when it is made)
    body = mm.models.load_model(setup[0] / "bert" / "model").bert
    model = mm.models.ModelForSequenceClassification.from_base(body, num_labels=2)
    opt = tasks._optimizer(model, cfg, 1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == [1.25e-4, 2.5e-4, 5e-4, 1e-3]
    assert tasks._optimizer(model, tasks.FinetuneConfig(task="classification",
                                                        train=str(tmp_path / "x.tsv")),
                            1e-3) is None


def test_distillation_and_augmentation(setup):
    teacher, _, _ = finetune(setup, "teacher", "--model", setup[0] / "bert" / "model")
    out, text, m = finetune(setup, "student", "--teacher", teacher, "--n-layer", 1,
                            "--n-embd", 16, "--augment", 2)
    assert "distilled from" in m["method"]
    assert m["train_examples"] == 3 * 36             # 40 rows, 10% held out, + 2 copies each
    tok_t = json.loads((teacher / "model" / "tokenizer.json").read_text(encoding="utf-8"))
    tok_s = json.loads((out / "model" / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok_s == tok_t                               # the student reads the teacher's ids


@pytest.mark.parametrize("extra, message", [
    (("--method", "sgd"), "invalid choice"),
    (("--method", "freeze", "--freeze-layers", 0), "needs --freeze-layers >= 1"),
    (("--layer-lr-decay", 1.5), "layer_lr_decay must be in (0, 1]"),
    (("--distill-alpha", 0.9), "need --teacher"),
    (("--lora-r", 0), "lora_r must be an int >= 1"),
    (("--augment", -1), "augment must be an int >= 0"),
])
def test_bad_method_options_are_one_line_errors(setup, extra, message):
    root, train, _ = setup
    rc, _, err = run("finetune", "--task", "classification", "--train", train, "--fast",
                     "--output-dir", root / "bad", "--no-progress", *extra)
    assert rc == 2 and message in err, err


def test_teacher_of_another_task_is_refused(setup, tmp_path):
    root, train, _ = setup
    teacher = root / "teacher-check"
    finetune(setup, "teacher-check")
    info = json.loads((teacher / "model" / "task.json").read_text(encoding="utf-8"))
    info["label_names"] = ["a", "b"]
    (teacher / "model" / "task.json").write_text(json.dumps(info), encoding="utf-8")
    rc, _, err = run("finetune", "--task", "classification", "--train", train, "--fast",
                     "--output-dir", tmp_path / "s", "--no-progress", "--teacher", teacher)
    assert rc == 2 and "predicts ['a', 'b']" in err, err


def test_evaluate_prunes_and_quantizes(setup):
    out, _, _ = finetune(setup, "to-compress", "--model", setup[0] / "bert" / "model")
    test = setup[2]
    rc, text, err = run("evaluate", "--model", out, "--file", test, "--json", "--device", DEVICE)
    assert rc == 0, err
    plain = json.loads(text)
    assert "model_bytes" not in plain
    rc, text, err = run("evaluate", "--model", out, "--file", test, "--json", "--quantize",
                        "int8", "--prune", 0.5, "--device", DEVICE)
    assert rc == 0, err
    r = json.loads(text)
    assert abs(r["sparsity"] - 0.5) < 1e-3
    assert r["quantized_layers"] == 2 * 6              # 6 Linears per block (no pooler)
    assert r["compressed_bytes"] < r["model_bytes"]
    assert r["examples"] == plain["examples"] and 0 <= r["accuracy"] <= 1
    rc, _, err = run("evaluate", "--model", out, "--file", test, "--prune", 1.5)
    assert rc == 2 and "--prune must be a finite number in [0, 1)" in err


def test_a_model_from_scratch_can_reuse_a_tokenizer(setup, tmp_path):
    out, _, _ = finetune(setup, "reuse-tok", "--tokenizer", setup[0] / "bert" / "model")
    saved = json.loads((out / "model" / "tokenizer.json").read_text(encoding="utf-8"))
    bert = json.loads((setup[0] / "bert" / "model" / "tokenizer.json").read_text(
        encoding="utf-8"))
    assert saved == bert
    root, train, _ = setup
    rc, _, err = run("finetune", "--task", "classification", "--train", train, "--fast",
                     "--output-dir", tmp_path / "x", "--tokenizer", tmp_path / "none.json")
    assert rc == 2 and "an existing tokenizer.json" in err, err


def test_qa_questions_without_answers_are_skipped_for_training_not_a_crash():
    from minillm import datasets as D
    ok = {"id": "1", "title": "t", "context": "the cat sat", "question": "who sat?",
          "answers": {"text": ["the cat"], "answer_start": [0]}}
    none = dict(ok, id="2", answers={"text": [], "answer_start": []})
    lines = []
    kept = tasks._placeable(D.Dataset([ok, none]), "train", lines.append)
    assert [e["id"] for e in kept] == ["1"] and "1 of 2 questions skipped" in lines[0]
    with pytest.raises(tasks.TaskError, match="no question has its answer"):
        tasks._placeable(D.Dataset([none]), "train", None)


@pytest.mark.parametrize("gold, pred, names, want", [
    ([0, 1, 2, 2], [0, 2, 2, 1], ["a", "b", "oos"], {"in_scope_accuracy": 0.5, "oos_recall": 0.5}),
    ([0, 1], [0, 0], ["a", "oos"], {"in_scope_accuracy": 1.0, "oos_recall": 0.0}),
    ([0, 0], [0, 1], ["a", "oos"], {"in_scope_accuracy": 0.5}),
    ([0, 1], [1, 1], ["a", "b"], {}),
])
def test_out_of_scope_metrics(gold, pred, names, want):
    assert tasks.out_of_scope_metrics(gold, pred, names) == want
