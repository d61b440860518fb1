"""Real headless Chromium, driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no websocket library).

One ``Browser`` is one browser session: cookies set by a page stay for
the next, as they do for a person clicking through the gallery.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--hide-scrollbars", "--mute-audio"]


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def fds() -> None:  # Chromium reads commands on fd 3, writes answers on fd 4
            import fcntl

            high_r, high_w = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                      "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_r, "rb", buffering=0)
        self._buffer = b""
        self._next = 0
        self._events: list[dict[str, Any]] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.page("Page.enable")
        self.page("Runtime.enable")
        self.size(width, height)

    # -- protocol ---------------------------------------------------------------------------
    def _read(self, timeout: float = 60) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            if not select.select([self._in], [], [], timeout)[0]:
                raise BrowserError(f"chromium said nothing for {timeout}s")
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise BrowserError("chromium went away")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        number = self._next
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == number:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, self.session, **params)

    def _wait(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self._events):
                if e.get("method") == event:
                    return self._events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no {event} within {timeout}s")
            self._events.append(self._read(left))

    # -- what tests use ------------------------------------------------------------------------
    def size(self, width: int, height: int, mobile: bool = False) -> None:
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)

    def dark(self, on: bool = True) -> None:
        self.page("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark" if on else "light"}])

    def go(self, url: str) -> None:
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        self.page("Page.navigate", url=url)
        self._wait("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """Click and wait for the page it leads to."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        found = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()")
        if not found:
            raise BrowserError(f"nothing matches {selector} on {self.url}")
        self._wait("Page.loadEventFired")

    def press(self, key: str, code: str, key_code: int) -> None:
        """A key press that navigates; waits for the page it leads to."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        for kind in ("rawKeyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key=key, code=code, windowsVirtualKeyCode=key_code)
        self._wait("Page.loadEventFired")

    def all(self, selector: str, attribute: str | None = None) -> list[str]:
        """The text (or an attribute, resolved for src/href) of every match."""
        what = f"e.{attribute}" if attribute in ("src", "href", "action") else (
            f"e.getAttribute({json.dumps(attribute)})" if attribute else "e.textContent")
        return self.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}), e => {what})")

    def text(self, selector: str = "body") -> str:
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''")

    def wait_for(self, expression: str, timeout: float = 20) -> None:
        """Until a script expression is true (a page that navigates by itself)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.js(expression):
                    return
            except BrowserError:
                pass  # between two documents
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression} still false after {timeout}s")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return self.js("location.href")

    def images_loaded(self, first: int = 1000, timeout: float = 10) -> bool:
        """Whether the page's first images have arrived and decoded (lazy
        ones may come just after the load event: wait a little for them)."""
        deadline = time.monotonic() + timeout
        check = f"Array.from(document.images).slice(0, {first}).every(i => i.complete && i.naturalWidth > 0)"
        while not self.js(check):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def screenshot(self, path: Path, full: bool = False) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full:
            params["captureBeyondViewport"] = True
        path.write_bytes(base64.b64decode(self.page("Page.captureScreenshot", **params)["data"]))

    def cookies(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.page("Network.getAllCookies").get("cookies", [])}

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError, BrokenPipeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._in.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
