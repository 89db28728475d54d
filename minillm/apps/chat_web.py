"""`minillm chat --web`: the chat as a small local web page, answers streamed token by token.

The server is Python's standard library (``http.server``), bound to 127.0.0.1 only. The page
(one HTML file, no external script or style) keeps the conversation itself and sends it whole
with each question (``POST /api/chat``, ``{"messages": [...]}``); the server fits it into the
model's window exactly as the terminal chat does and streams JSON lines back:
``{"dropped": n}`` when old turns had to go, ``{"text": "..."}`` for each new piece of the
answer, ``{"done": true}`` at the end (or ``{"error": "..."}``). One answer is generated at a
time (a lock), so several tabs share the model safely.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..finetune import instruct as I
from .chat import ChatSession

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 1 << 20

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>minillm chat</title>
<style>
body{font-family:sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
#log div{margin:.4em 0;padding:.5em .8em;border-radius:8px;white-space:pre-wrap}
.user{background:#e8f0fe}.assistant{background:#f1f3f4}.note{color:#888;font-size:.9em}
form{display:flex;gap:.5em;margin-top:1em}textarea{flex:1;font-size:1em;height:3em}
</style></head><body>
<h1>minillm 对话（chat）</h1>
<p class="note">模型：__MODEL__ · 回车发送，Shift+回车换行 · <a href="#" id="reset">清空对话</a></p>
<div id="log"></div>
<form id="form"><textarea id="q" placeholder="今天北京天气怎么样？"></textarea>
<button id="send">发送</button></form>
<script>
const log = document.getElementById("log"), q = document.getElementById("q");
let messages = [];
function add(cls, text) { const d = document.createElement("div"); d.className = cls;
  d.textContent = text; log.appendChild(d); return d; }
async function ask(text) {
  messages.push({role: "user", content: text}); add("user", text);
  const out = add("assistant", ""); out.dataset.state = "streaming";
  const res = await fetch("/api/chat", {method: "POST", body: JSON.stringify({messages})});
  const reader = res.body.getReader(), dec = new TextDecoder(); let buf = "", answer = "";
  while (true) {
    const {value, done} = await reader.read(); if (done) break;
    buf += dec.decode(value, {stream: true}); let i;
    while ((i = buf.indexOf("\\n")) >= 0) {
      const m = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
      if (m.text) { answer += m.text; out.textContent = answer; }
      if (m.dropped) { messages = messages.slice(2 * m.dropped);
        log.insertBefore(Object.assign(document.createElement("div"), {className: "note",
          textContent: "（最早的 " + m.dropped + " 轮对话超出了模型的上下文窗口，已不再发送）"}), out); }
      if (m.error) { out.className = "note"; out.textContent = m.error; messages.pop(); }
    }
  }
  if (out.className === "assistant") messages.push({role: "assistant", content: answer});
  out.dataset.state = "done";
}
document.getElementById("form").onsubmit = e => { e.preventDefault();
  const text = q.value.trim(); if (text) { q.value = ""; ask(text); } };
q.onkeydown = e => { if (e.key === "Enter" && !e.shiftKey) {
  e.preventDefault(); document.getElementById("form").requestSubmit(); } };
document.getElementById("reset").onclick = e => { e.preventDefault(); messages = [];
  log.textContent = ""; };
</script></body></html>
"""


class ChatHandler(BaseHTTPRequestHandler):
    """Serves the page (GET /) and the streaming API (POST /api/chat) for ``session``; the
    class attributes are set by :func:`make_handler`."""

    session: ChatSession = None
    lock = None
    page = b""

    def log_message(self, *args):              # quiet: the terminal shows the URL only
        pass

    def do_GET(self):
        if self.path.split("?")[0] not in ("/", "/index.html"):
            self.send_error(404)
            return
        self._start(200, "text/html; charset=utf-8", len(self.page))
        self.wfile.write(self.page)

    def do_POST(self):
        if self.path != "/api/chat":
            self.send_error(404)
            return
        try:
            messages = self._messages()
        except (ValueError, I.TemplateError) as e:
            self._start(400, "application/x-ndjson")
            self._line({"error": str(e)})
            return
        self._start(200, "application/x-ndjson")
        with self.lock:
            self._stream(messages)

    def _messages(self):
        n = int(self.headers.get("Content-Length") or 0)
        if not 0 < n <= MAX_BODY:
            raise ValueError(f"the request body must hold 1 to {MAX_BODY} bytes")
        data = json.loads(self.rfile.read(n).decode("utf-8"))
        messages = data.get("messages") if isinstance(data, dict) else None
        I.check_messages(messages, final_assistant=False)
        if messages[-1]["role"] != "user":
            raise ValueError("the last message must be the user's question")
        return messages

    def _stream(self, messages):
        self.session.messages = messages[:-1]
        note = lambda n: self._line({"dropped": n})  # noqa: E731
        try:
            for piece in self.session.stream(messages[-1]["content"], on_truncate=note):
                self._line({"text": piece})
            self._line({"done": True})
        except I.TemplateError as e:
            self._line({"error": str(e)})

    def _start(self, code, kind, length=None):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-store")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _line(self, obj):
        self.wfile.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
        self.wfile.flush()


def make_handler(session: ChatSession, title: str):
    """A :class:`ChatHandler` subclass bound to ``session`` (one answer at a time)."""
    page = PAGE.replace("__MODEL__", title.replace("<", "&lt;")).encode("utf-8")
    return type("BoundChatHandler", (ChatHandler,),
                {"session": session, "lock": threading.Lock(), "page": page})


def make_server(session: ChatSession, host="127.0.0.1", port=0, title="minillm"):
    """A ``ThreadingHTTPServer`` for the chat page (call ``serve_forever``); loopback only."""
    if host not in LOOPBACK:
        raise I.TemplateError(f"the chat page serves this machine only (127.0.0.1), not "
                              f"{host!r}: it has no authentication")
    return ThreadingHTTPServer((host, port), make_handler(session, title))
