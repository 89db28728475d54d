"""A headless Chromium driven over the DevTools protocol, for tests that type into a page.

Debian's ``chromium`` package is the browser (no downloaded browser build); the protocol runs
over a WebSocket through tornado's client (tornado comes with the dev extras' Jupyter kernel).
Only 127.0.0.1 pages are opened.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium():
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class Page:
    """One tab: ``await page.evaluate(js)``, ``await page.type(text)``, ``await page.key(k)``."""

    def __init__(self, ws, session):
        self.ws, self.session, self.ids = ws, session, itertools.count(1)

    async def send(self, method, **params):
        msg_id = next(self.ids)
        self.ws.write_message(json.dumps({"id": msg_id, "method": method, "params": params,
                                          **({"sessionId": self.session} if self.session else {})}))
        while True:
            reply = json.loads(await self.ws.read_message())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, js):
        r = await self.send("Runtime.evaluate", expression=js, returnByValue=True,
                            awaitPromise=True)
        return r.get("result", {}).get("value")

    async def wait_for(self, js, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = await self.evaluate(js)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for: {js}")

    async def type(self, text):
        await self.send("Input.insertText", text=text)

    async def key(self, key, code=13):
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                            windowsVirtualKeyCode=code)

    async def screenshot(self, path):
        import base64
        r = await self.send("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))


async def open_page(url, scenario):
    """Start Chromium, open ``url`` in a new tab, run ``await scenario(page)``; returns its
    result. The browser is always stopped."""
    from tornado.websocket import websocket_connect
    profile = tempfile.mkdtemp(prefix="minillm-chromium-")
    proc = subprocess.Popen([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--no-first-run", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        endpoint = _devtools_endpoint(proc)
        ws = await websocket_connect(endpoint)
        browser = Page(ws, None)
        target = (await browser.send("Target.createTarget", url=url))["targetId"]
        session = (await browser.send("Target.attachToTarget", targetId=target,
                                      flatten=True))["sessionId"]
        page = Page(ws, session)
        # a new tab is about:blank (already 'complete') until the navigation commits
        await page.wait_for(f"location.href === {json.dumps(url)} && "
                            "document.readyState === 'complete'")
        return await scenario(page)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_endpoint(proc, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stderr.readline()
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:      # keep reading what Chromium logs, so that its pipe never fills up
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return m.group(1)
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("Chromium did not start its DevTools endpoint")


def run(url, scenario):
    return asyncio.run(open_page(url, scenario))
