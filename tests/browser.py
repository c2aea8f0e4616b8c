"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no extra packages.

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON message ended by NUL.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@dataclass
class PageResult:
    problems: list[str] = field(default_factory=list)  # console errors/warnings, exceptions, failed or remote loads
    requests: list[str] = field(default_factory=list)
    images: list[list] = field(default_factory=list)  # [complete, naturalWidth] per <img>
    screenshot: bytes = b""


class Chromium:
    def __init__(self, user_data_dir: Path, binary: str | None = None, timeout: float = 60.0) -> None:
        binary = binary or chromium_binary()
        if binary is None:
            raise FileNotFoundError("chromium")
        self.timeout = timeout
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Move the child's ends above 9 so that the dup2 onto 3 and 4 below never clobbers one of them.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire_pipes() -> None:
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_pipes, close_fds=False,  # Python's own descriptors are close-on-exec anyway
        )
        os.close(child_r)
        os.close(child_w)
        self._write, self._read = to_browser_w, from_browser_r
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def _reader(self) -> None:
        buffer = b""
        while chunk := os.read(self._read, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message and message["id"] in self._replies:
                    self._replies[message["id"]].put(message)
                else:
                    self.events.put(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        reply: queue.Queue = queue.Queue()
        self._replies[self._next_id] = reply
        os.write(self._write, json.dumps(message).encode() + b"\0")
        try:
            answer = reply.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply to {method}; stderr: {''.join(self.stderr)[-2000:]}") from None
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def load(self, url: str, width: int = 1100, settle: float = 0.5) -> PageResult:
        """Open url in a fresh tab, wait for its load event, and collect problems, images and a full-page PNG."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        result = PageResult()
        self.send("Page.navigate", {"url": url}, session)
        deadline, loaded, settled_at = time.monotonic() + self.timeout, False, None
        while time.monotonic() < deadline:
            if loaded and settled_at is None:
                settled_at = time.monotonic() + settle  # late console messages still get caught
            if settled_at is not None and time.monotonic() > settled_at:
                break
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Page.loadEventFired":
                loaded = True
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                result.problems.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                result.problems.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                result.problems.append(f"log {params['entry']['level']}: {params['entry']['text']}")
            elif method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                result.problems.append(f"load failed: {params.get('errorText')}")
        if not loaded:
            raise TimeoutError(f"{url} did not finish loading")
        images = self.send("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images, i => [i.complete, i.naturalWidth]))",
            "returnByValue": True}, session)
        result.images = json.loads(images["result"]["value"])
        height = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False}, session)
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
        result.screenshot = base64.b64decode(shot["data"])
        self.send("Target.closeTarget", {"targetId": target})
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
