"""``minillm.apps.tasks.sample_examples``: the subsets behind ``--max-train/eval-examples``."""


def test_limit_samples_across_a_sorted_split():
    # CLINC150-like: every out-of-scope example last; a prefix would drop the class entirely
    from minillm import datasets
    from minillm.apps import tasks
    examples = [{"text": f"q{i}", "label": 0 if i < 90 else 1} for i in range(100)]
    ds = datasets.Dataset(examples, ["in", "oos"], "toy", "test", {})
    small = tasks.sample_examples(ds, 30, seed=0)
    idx = [int(e["text"][1:]) for e in small.examples]
    assert len(idx) == 30 and idx == sorted(idx) and len(set(idx)) == 30
    assert any(i >= 90 for i in idx), "the sample must reach the end of the split"
    assert [e["text"] for e in tasks.sample_examples(ds, 30, seed=0).examples] == \
        [e["text"] for e in small.examples]                       # seeded: reproducible
    assert tasks.sample_examples(ds, 30, seed=1).examples != small.examples
    assert tasks.sample_examples(ds, 100, seed=0) is ds and tasks.sample_examples(ds, None) is ds
