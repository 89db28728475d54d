"""Instruction tuning (minillm.finetune.instruct): the chat template, the response-only loss
mask, batching, and answering with a KV cache."""
from __future__ import annotations

import numpy as np
import pytest

import minillm as mm
from minillm.data.tokenizers import CharTokenizer
from minillm.finetune import instruct as I
from minillm.models import GPT, GPTConfig

T = I.ChatTemplate()
TEXTS = ["今天北京天气怎么样？北京今天晴。", "把这个日期写成英文。2024-03-05 March 5, 2024",
         T.system + T.user + T.input + T.assistant + T.separator, "你是助手。好的谢谢"]


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.train(TEXTS)


RECORD = {"instruction": "今天北京天气怎么样？", "input": "", "output": "北京今天晴。"}
CHAT = [{"role": "system", "content": "你是助手。"},
        {"role": "user", "content": "今天北京天气怎么样？"},
        {"role": "assistant", "content": "晴。"},
        {"role": "user", "content": "谢谢"},
        {"role": "assistant", "content": "好的"}]


def test_template_round_trip(tmp_path):
    custom = I.ChatTemplate(user="Q: ", assistant="A: ", name="qa")
    custom.save(tmp_path)
    assert I.ChatTemplate.load(tmp_path) == custom
    (tmp_path / I.TEMPLATE_FILE).write_text('{"user": 3}', encoding="utf-8")
    with pytest.raises(I.TemplateError, match="fields must be strings"):
        I.ChatTemplate.load(tmp_path)
    with pytest.raises(I.TemplateError, match="not an instruction-tuned model"):
        I.ChatTemplate.load(tmp_path / "nowhere")


def test_the_loss_is_on_the_response_tokens_only(tok):
    ids, labels = I.encode_conversation(tok, T, I.record_messages(T, RECORD))
    answer = tok.encode(RECORD["output"]) + [tok.eos_id]
    prompt = tok.encode(T.user + RECORD["instruction"] + T.separator + T.assistant)
    assert ids == prompt + answer
    assert labels == [I.IGNORE] * len(prompt) + answer
    x, y = I.shift_for_lm(ids, labels)
    assert x == ids[:-1] and y == labels[1:]
    # exactly the answer and its eos are targets, each predicted from the token before it
    targets = [(x[t], y[t]) for t in range(len(y)) if y[t] != I.IGNORE]
    assert [b for _, b in targets] == answer
    assert targets[0][0] == prompt[-1]


def test_a_conversation_masks_every_user_and_system_turn(tok):
    ids, labels = I.encode_conversation(tok, T, CHAT)
    kept = [i for i, l in zip(ids, labels) if l != I.IGNORE]
    assert kept == tok.encode("晴。") + [tok.eos_id] + tok.encode("好的") + [tok.eos_id]


def test_the_prompt_at_inference_is_the_training_prefix(tok):
    ids, _ = I.encode_conversation(tok, T, CHAT)
    asked = I.prompt_ids(tok, T, CHAT[:-1])
    assert ids == asked + tok.encode("好的") + [tok.eos_id]


def test_input_goes_on_its_own_line():
    assert T.user_text("把这个日期写成英文。", "2024-03-05") == \
        "把这个日期写成英文。" + T.separator + T.input + "2024-03-05"
    assert T.user_text("你好") == "你好"


BAD_CONVERSATIONS = {
    "empty": ([], "non-empty list"),
    "assistant first": ([{"role": "assistant", "content": "x"}], "expected 'user'"),
    "two users": ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                  "message 1 has role 'user'"),
    "late system": ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
                    "system only first"),
    "no content": ([{"role": "user"}], "message 0 must be"),
    "ends with user": ([{"role": "user", "content": "a"}], "must end with an assistant"),
}


@pytest.mark.parametrize("case", list(BAD_CONVERSATIONS))
def test_bad_conversations_are_named(case, tok):
    messages, words = BAD_CONVERSATIONS[case]
    with pytest.raises(I.TemplateError, match=words):
        I.encode_conversation(tok, T, messages)


def test_padding_is_never_a_target():
    xs, ys = I.pad_batch([([1, 2, 3], [I.IGNORE, 5, 6]), ([4], [7])], pad_id=0)
    assert xs.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert ys.tolist() == [[I.IGNORE, 5, 6], [7, I.IGNORE, I.IGNORE]]


def test_a_record_longer_than_the_window_is_an_error(tok):
    long = dict(RECORD, output="晴" * 40)
    with pytest.raises(I.TemplateError, match=r"1 of 2 records are longer than .*record 1"):
        I.encode_records(tok, T, [RECORD, long], block_size=32)
    rows = I.encode_records(tok, T, [RECORD, {"messages": CHAT}], block_size=64)
    assert [len(r["x"]) for r in rows] == [len(r["y"]) for r in rows]


def _model(tok, block_size=48):
    mm.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2,
                         n_embd=16, dropout=0.0))


def test_padded_batch_loss_equals_the_mean_over_response_tokens(tok):
    model = _model(tok)
    rows = I.encode_records(tok, T, [RECORD, {"messages": CHAT}], block_size=48)
    batch = I.SFTCollator(tok.pad_id)(rows)
    _, loss = model(batch["ids"], batch["targets"])
    total, count = 0.0, 0
    for r in rows:                      # each row alone, unpadded: the same tokens, same loss
        x = mm.tensor(np.asarray([r["x"]]))
        y = np.asarray([r["y"]])
        logits = model(x).numpy()[0]
        z = logits - logits.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        keep = y[0] != I.IGNORE
        total -= logp[keep, y[0][keep]].sum()
        count += keep.sum()
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_the_cached_greedy_answer_equals_generate(tok):
    model = _model(tok)
    messages = CHAT[:2]
    ids = I.prompt_ids(tok, T, messages)
    streamed = list(I.stream_tokens(model, ids, 10))
    full = model.generate(mm.tensor(np.asarray([ids])), 10, do_sample=False).numpy()[0]
    assert streamed == full[len(ids):].tolist()
    assert I.answer(model, tok, T, messages, 10) == tok.decode(streamed)
    # never past the window
    assert len(list(I.stream_tokens(model, ids, 1000))) == model.config.block_size - len(ids)


def test_evaluation_counts_exact_matches_per_task(tok, monkeypatch):
    records = [dict(RECORD, task="weather"), dict(RECORD, task="weather", output="不对"),
               dict(RECORD, task="other")]
    monkeypatch.setattr(I, "answer", lambda *a, **k: "北京今天晴。 ")
    got = I.evaluate_records(None, tok, T, records)
    assert got["n"] == 3 and got["exact_match"] == pytest.approx(2 / 3)
    assert got["per_task"] == {"other": {"exact_match": 1.0, "n": 1},
                               "weather": {"exact_match": 0.5, "n": 2}}


# -- minillm chat ------------------------------------------------------------------------------
def _history(n_turns):
    out = []
    for _ in range(n_turns):
        out += [{"role": "user", "content": "今天北京天气怎么样？"},
                {"role": "assistant", "content": "北京今天晴。"}]
    return out


def test_chat_history_drops_the_oldest_turns_to_fit_the_window(tok):
    from minillm.apps.chat import ChatSession
    session = ChatSession(_model(tok, block_size=64), tok, T, max_new_tokens=8)
    question = [{"role": "user", "content": "谢谢"}]
    kept, dropped = session.fit_history(_history(5) + question)
    assert dropped > 0 and kept[-1] == question[0] and kept[0]["role"] == "user"
    assert kept == (_history(5) + question)[2 * dropped:]
    assert len(I.prompt_ids(tok, T, kept)) <= 64 - 8
    # one pair fewer dropped would not have fit: the oldest turns go, and no more of them
    assert len(I.prompt_ids(tok, T, _history(5 - dropped + 1) + question)) > 64 - 8
    assert session.fit_history(question) == (question, 0)


def test_chat_refuses_a_question_longer_than_the_window(tok):
    from minillm.apps.chat import ChatSession
    session = ChatSession(_model(tok, block_size=32), tok, T, max_new_tokens=8)
    with pytest.raises(I.TemplateError, match="the question alone takes more than 24 tokens"):
        session.reply("今天北京天气怎么样？" * 3)
    with pytest.raises(I.TemplateError, match=r"max_new_tokens must be in \[1, 32\)"):
        ChatSession(session.model, tok, T, max_new_tokens=32)


def test_chat_streams_the_greedy_answer_and_keeps_the_turn(tok):
    from minillm.apps.chat import ChatSession
    model = _model(tok)
    session = ChatSession(model, tok, T, max_new_tokens=6)
    pieces = list(session.stream("今天北京天气怎么样？"))
    expected = I.answer(model, tok, T, [{"role": "user", "content": "今天北京天气怎么样？"}], 6)
    assert "".join(pieces) == expected and len(pieces) == len(expected)
    assert session.messages[-1] == {"role": "assistant", "content": expected}
    session.reset()
    assert session.messages == []


def test_the_interactive_loop_understands_its_commands(tok):
    from minillm.apps.chat import ChatSession, run_interactive
    session = ChatSession(_model(tok), tok, T, max_new_tokens=4)
    lines = iter(["今天北京天气怎么样？", "/reset", "/help", "", "/exit", "never read"])
    out = []
    assert run_interactive(session, read=lambda _: next(lines), write=out.append,
                           flush=lambda: None) == 0
    text = "".join(out)
    assert "(conversation reset)" in text and "/exit" in text and session.messages == []
    assert next(lines) == "never read"


def _sliding_reference(model, ids, n):
    """Greedy tokens recomputed from scratch each step on the sliding context: the whole
    sequence until it passes the window, then the newest half window, growing again."""
    window = model.config.block_size
    seen, ctx, out = list(ids), list(ids), []
    for _ in range(n):
        if len(ctx) > window:
            ctx = seen[-(window // 2):]
        logits = model(mm.tensor(np.asarray([ctx]))).numpy()[0, -1]
        token = int(logits.argmax())
        out.append(token)
        seen.append(token)
        ctx.append(token)
    return out


def test_the_sliding_cache_changes_nothing_inside_the_window(tok):
    model = _model(tok, block_size=32)
    ids = I.prompt_ids(tok, T, CHAT[:2])
    n = 32 - len(ids)
    assert list(I.stream_tokens(model, ids, n, slide=True)) == \
        list(I.stream_tokens(model, ids, n))


def test_past_the_window_the_sliding_cache_equals_recomputing_its_context(tok):
    model = _model(tok, block_size=16)
    ids = I.prompt_ids(tok, T, CHAT[:2])[-10:]
    streamed = list(I.stream_tokens(model, ids, 40, slide=True))
    assert len(streamed) == 40                    # well past the 16-token window
    assert streamed == _sliding_reference(model, ids, 40)
