"""`minillm chat`: talk to an instruction-tuned GPT (``minillm finetune --task instruct``).

A :class:`ChatSession` keeps the conversation as messages, renders it with the model's chat
template, and streams the answer token by token with a KV cache. The history must fit the
model's window together with room for the answer: the oldest turns are dropped first (and the
session says how many), never the newest question.
"""
from __future__ import annotations

import sys

from ..finetune import instruct as I

COMMANDS = {"/reset": "forget the conversation", "/exit": "leave (Ctrl-D too)",
            "/help": "this list"}


class ChatSession:
    """A conversation with ``model``: ``reply(text)`` returns (and streams) the answer."""

    def __init__(self, model, tok, template, max_new_tokens=None, temperature=0.0, top_k=None,
                 top_p=None, seed=None):
        window = model.config.block_size
        if max_new_tokens is None:                   # an answer may take half the window
            max_new_tokens = min(64, window // 2)
        if not 1 <= max_new_tokens < window:
            raise I.TemplateError(f"max_new_tokens must be in [1, {window}) for this model "
                                  f"(its window is {window} tokens), got {max_new_tokens}")
        self.model, self.tok, self.template = model, tok, template
        self.max_new_tokens = max_new_tokens
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        self.messages = []

    def reset(self):
        self.messages = []

    def fit_history(self, messages):
        """``(messages that fit, turns dropped)``: whole user/assistant pairs are dropped from
        the oldest until the prompt leaves ``max_new_tokens`` of room in the window."""
        limit = self.model.config.block_size - self.max_new_tokens
        dropped = 0
        while len(I.prompt_ids(self.tok, self.template, messages)) > limit:
            if len(messages) < 3:
                raise I.TemplateError(
                    f"the question alone takes more than {limit} tokens (the window is "
                    f"{self.model.config.block_size}, {self.max_new_tokens} kept for the "
                    "answer): ask a shorter one or lower --max-new-tokens")
            messages = messages[2:]
            dropped += 1
        return messages, dropped

    def stream(self, text, on_truncate=None):
        """Yield the answer to ``text`` as pieces of text while they are sampled; the turn is
        added to the history when the answer is complete."""
        messages, dropped = self.fit_history(self.messages + [{"role": "user",
                                                                 "content": text}])
        if dropped and on_truncate is not None:
            on_truncate(dropped)
        ids = I.prompt_ids(self.tok, self.template, messages)
        tokens, shown = [], ""
        for token in I.stream_tokens(self.model, ids, self.max_new_tokens, slide=True,
                                     eos_id=self.tok.eos_id, **self.sampling):
            tokens.append(token)
            text_now = self.tok.decode(tokens)
            if not text_now.endswith("\ufffd"):          # a byte-level token may end mid-char
                yield text_now[len(shown):]
                shown = text_now
        answer = self.tok.decode(tokens)
        if answer != shown:
            yield answer[len(shown):]
        self.messages = messages + [{"role": "assistant", "content": answer}]

    def reply(self, text, on_truncate=None) -> str:
        return "".join(self.stream(text, on_truncate))


def run_interactive(session, read=input, write=sys.stdout.write, flush=sys.stdout.flush):
    """The terminal loop: a question per line, the answer streamed; /reset, /exit, /help."""
    write("minillm chat: ask a question (/help for commands, /exit to leave)\n")
    while True:
        try:
            line = read("你> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return 0
        if not line:
            continue
        if line == "/exit":
            return 0
        if line in ("/reset", "/help") or line.startswith("/"):
            if line == "/reset":
                session.reset()
                write("(conversation reset)\n")
            else:
                write("".join(f"  {c:<7} {what}\n" for c, what in COMMANDS.items()))
            continue
        write("助手> ")
        note = lambda n: write(f"(the {n} oldest turn{'s' if n > 1 else ''} no longer "  # noqa
                               f"fit the window and {'were' if n > 1 else 'was'} dropped)"
                               "\n助手> ")
        for piece in session.stream(line, on_truncate=note):
            write(piece)
            flush()
        write("\n")
