"""Headless Chromium driven over the Chrome DevTools Protocol with the ``websockets`` package.

No browser download, no Playwright: the Debian ``chromium`` binary is started with
``--remote-debugging-port=0``; it writes the port it picked and the browser target's path
to ``<user-data-dir>/DevToolsActivePort``, and we speak CDP (JSON over one WebSocket,
"flattened" sessions per page) directly.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import websockets

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    """A CDP command failed, a page threw, or the browser did not start."""


class Chromium:
    """One headless browser process; ``async with Chromium(...) as browser``."""

    def __init__(self, executable: str, user_data_dir: Path, extra_args: list[str] | None = None,
                 window: tuple[int, int] = (1100, 900)) -> None:
        self.executable = executable
        self.user_data_dir = Path(user_data_dir)
        self.args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
            f"--window-size={window[0]},{window[1]}",
            f"--user-data-dir={self.user_data_dir}", "--remote-debugging-port=0",
            *(extra_args or []), "about:blank",
        ]
        self.log_path = self.user_data_dir.parent / f"{self.user_data_dir.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []  # console messages and uncaught exceptions of every page

    async def __aenter__(self) -> Chromium:
        self.user_data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.user_data_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen([self.executable, *self.args], stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                raise CDPError(f"chromium exited with {self._proc.returncode}: {self.log_tail()}")
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                break
            if time.monotonic() > deadline:
                await self.close()
                raise CDPError(f"chromium wrote no DevToolsActivePort within 60 s: {self.log_tail()}")
            await asyncio.sleep(0.1)
        self._ws = await websockets.connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_size=None,
                                            ping_interval=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(CDPError(f"{msg['error'].get('message')}: {msg['error'].get('data', '')}"))
                else:
                    fut.set_result(msg.get("result", {}))
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(f"console.{msg['params']['type']}: " +
                                    " ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                d = msg["params"]["exceptionDetails"]
                self.console.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
                   timeout: float = 30) -> dict[str, Any]:
        i = next(self._ids)
        msg: dict[str, Any] = {"id": i, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self._ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    async def open_page(self, url: str) -> Page:
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, session)
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.goto(url)
        return page

    async def close(self) -> None:
        if self._ws is not None:
            try:
                await asyncio.wait_for(self.send("Browser.close"), 5)
            except (CDPError, TimeoutError, websockets.ConnectionClosed):
                pass  # killed below anyway
            await self._ws.close()
            self._ws = None
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None


class Page:
    """A tab attached with a flattened CDP session."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session, timeout)

    async def goto(self, url: str) -> None:
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout=30)

    async def evaluate(self, expression: str, await_promise: bool = False, user_gesture: bool = False) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": await_promise, "userGesture": user_gesture})
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise CDPError(f"{expression!r} threw: {d.get('exception', {}).get('description', d.get('text'))}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; return its value, or raise with the console on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out after {timeout} s waiting for {expression!r}; console: "
                               f"{self.browser.console[-10:]}")
            await asyncio.sleep(interval)

    async def click(self, selector: str) -> None:
        """A real mouse click (press + release at the element's centre): a user gesture for the page."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent",
                            {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1})

    async def screenshot(self, path: Path) -> Path:
        data = (await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}))["data"]
        path.write_bytes(base64.b64decode(data))
        return path
