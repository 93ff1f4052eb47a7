"""A headless Chromium driven over the DevTools protocol on a pipe: open a page, read the rendered DOM, collect the
console, take a screenshot. Written by hand because the libraries that do this need what CI cannot fetch:
Playwright and Selenium download a browser or driver build of their own; Debian's `chromium` speaks the protocol on
file descriptors 3 and 4 (`--remote-debugging-pipe`), NUL-terminated JSON each way, so no port or package is needed.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find() -> str | None:
    """The browser's executable, or None: CHROMIUM names one, else the first of CANDIDATES on PATH."""
    return os.environ.get("CHROMIUM") or next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Chromium:
    """`with Chromium(exe) as browser: browser.open(url)`; then `evaluate`, `screenshot`, `problems`."""

    def __init__(self, executable: str, width: int = 1366, height: int = 900, timeout_s: float = 60) -> None:
        self.executable, self.size, self.timeout_s = executable, (width, height), timeout_s
        self.events: list[dict] = []
        self._next_id, self._buffer, self._session = 0, b"", None

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child, before exec: the protocol's pipe is fds 3 (in) and 4 (out)
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._process = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=on_fds_3_and_4, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)  # stderr: dbus complaints of a machine without a session bus
        os.close(to_browser)
        os.close(from_browser)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close", browser=True)
            self._process.wait(10)
        except Exception:  # a browser that died already: kill what is left
            self._process.kill()
            self._process.wait(10)
        finally:
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    def open(self, url: str) -> None:
        """Navigate and wait for the load event (every image loaded or failed)."""
        self.call("Page.navigate", url=url)
        self._wait(lambda e: e.get("method") == "Page.loadEventFired")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and failed loads seen so far."""
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                found.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                                 for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                found.append(f"{p['entry']['source']} {p['entry']['level']}: {p['entry']['text']} "
                             f"{p['entry'].get('url', '')}".strip())
        return found

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == message["id"])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def _wait(self, wanted) -> dict:
        deadline = time.monotonic() + self.timeout_s
        while True:
            for i, m in enumerate(self.events):
                if wanted(m):
                    return self.events.pop(i) if "id" in m else m
            while b"\0" not in self._buffer:
                if not select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(f"no answer from {self.executable} in {self.timeout_s} s")
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise EOFError(f"{self.executable} closed the DevTools pipe (it exited)")
                self._buffer += chunk
            text, self._buffer = self._buffer.split(b"\0", 1)
            self.events.append(json.loads(text))
