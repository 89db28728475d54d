"""`minillm chat --web`: the streaming API on loopback, and the page in headless Chromium
(a question typed and sent with Enter, the streamed answer read from the page)."""
from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request

import pytest

import minillm as mm
from minillm.apps.chat import ChatSession
from minillm.apps.chat_web import make_server
from minillm.data.tokenizers import CharTokenizer
from minillm.finetune import instruct as I
from minillm.models import GPT, GPTConfig

T = I.ChatTemplate()
QUESTION = "今天北京天气怎么样？"
DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module")
def served():
    tok = CharTokenizer.train([QUESTION + "北京今天晴。谢谢" + T.user + T.assistant + T.separator])
    mm.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2,
                          n_embd=16, dropout=0.0))
    session = ChatSession(model, tok, T, max_new_tokens=8)
    server = make_server(session, title="tiny <model>")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", model, tok
    server.shutdown()
    server.server_close()


def _post(url, body):
    req = urllib.request.Request(url + "/api/chat", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, [json.loads(line) for line in r.read().decode().splitlines()]
    except urllib.error.HTTPError as e:
        return e.code, [json.loads(line) for line in e.read().decode().splitlines()]


def test_the_api_streams_the_greedy_answer(served):
    url, model, tok = served
    messages = [{"role": "user", "content": QUESTION}]
    status, lines = _post(url, json.dumps({"messages": messages}).encode())
    assert status == 200 and lines[-1] == {"done": True}
    text = "".join(m.get("text", "") for m in lines)
    assert text == I.answer(model, tok, T, messages, 8)


BAD_BODIES = {
    "not json": (b"hello", "Expecting value"),
    "no messages": (b"{}", "non-empty list"),
    "ends with the answer": (json.dumps({"messages": [{"role": "user", "content": "a"},
                                                      {"role": "assistant", "content": "b"}]})
                             .encode(), "last message must be the user's"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_bad_request_is_a_one_line_error(served, case):
    body, words = BAD_BODIES[case]
    status, lines = _post(served[0], body)
    assert status == 400 and len(lines) == 1 and words in lines[0]["error"]


def test_the_page_is_local_and_served_only_on_loopback(served):
    with urllib.request.urlopen(served[0] + "/", timeout=30) as r:
        page = r.read().decode("utf-8")
    assert "tiny &lt;model>" in page and "http" not in page.split("<script>")[1]
    with pytest.raises(I.TemplateError, match="serves this machine only"):
        make_server(None, host="0.0.0.0")


@pytest.mark.skipif(DEVICE != "cpu", reason="the browser test runs once, on the CPU pass")
def test_a_question_typed_in_the_page_gets_the_streamed_answer(served, tmp_path):
    browser = pytest.importorskip("browser", reason="tests/browser.py")
    if browser.chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    url, model, tok = served
    want = I.answer(model, tok, T, [{"role": "user", "content": QUESTION}], 8)

    async def scenario(page):
        await page.evaluate("document.getElementById('q').focus()")
        await page.type(QUESTION)
        await page.key("Enter")
        await page.wait_for("document.querySelector('.assistant')?.dataset.state === 'done'")
        first = await page.evaluate("document.querySelector('.assistant').textContent")
        await page.type("谢谢")
        await page.key("Enter")
        await page.wait_for("document.querySelectorAll('.assistant').length === 2 && "
                            "document.querySelectorAll('.assistant')[1].dataset.state === 'done'")
        await page.screenshot(tmp_path / "chat.png")
        turns = await page.evaluate("[...document.querySelectorAll('#log div')]"
                                    ".map(d => d.className)")
        return first, turns

    first, turns = browser.run(url + "/", scenario)
    assert first == want
    assert turns == ["user", "assistant", "user", "assistant"]
    assert (tmp_path / "chat.png").read_bytes()[:4] == b"\x89PNG"
