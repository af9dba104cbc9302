"""A small Chrome DevTools Protocol client over `--remote-debugging-pipe` (standard library only).

Chromium reads commands on its fd 3 and writes answers and events on its fd 4, each a JSON message ended by NUL.
No debugging port is opened, so nothing but this process can drive the browser. It is launched offline: every
host name but 127.0.0.1 resolves to nothing, and any other connection would go to a dead proxy on 127.0.0.1:9.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-dev-shm-usage",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",  # loopback is never proxied; anything else would hit a closed port
    "--window-size=1280,900",
)


class CDPError(RuntimeError):
    """A protocol error answer, a timeout, or the browser gone."""


class Browser:
    """A headless Chromium driven over the DevTools pipe."""

    def __init__(self, executable: str, profile_dir: Path, log_path: Path, extra_flags: tuple[str, ...] = ()) -> None:
        cmd_read, self._cmd_write = os.pipe()
        self._out_read, out_write = os.pipe()
        self._log = open(log_path, "wb")  # closed in close()
        # sh moves the pipes to fds 3 and 4 (what --remote-debugging-pipe uses) and points stdin/stdout elsewhere.
        script = 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null'
        args = [
            *OFFLINE_FLAGS,
            *extra_flags,
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            ["sh", "-c", script, executable, *args], stdin=cmd_read, stdout=out_write, stderr=self._log
        )
        os.close(cmd_read)
        os.close(out_write)
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.events: list[dict[str, Any]] = []
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()

    # -- transport ---------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = bytearray()
        while True:
            try:
                chunk = os.read(self._out_read, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                break
            start = len(buffer)
            buffer += chunk
            end = buffer.find(b"\0", start)
            while end >= 0:
                message = json.loads(bytes(buffer[:end]))
                del buffer[: end + 1]
                self._dispatch(message)
                end = buffer.find(b"\0")
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._cond:
                self._answers[message["id"]] = message
                self._cond.notify_all()
            return
        with self._cond:
            self.events.append(message)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(message)

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        with self._cond:
            self._listeners.append(listener)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 30):
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._cmd_write, data) :]
        except OSError as exc:
            raise CDPError(f"{method}: the browser is gone ({exc})") from exc
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if self._closed:
                    raise CDPError(f"{method}: the browser closed the pipe")
                if left <= 0:
                    raise CDPError(f"{method}: no answer within {timeout}s")
                self._cond.wait(left)
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session, width, height)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except CDPError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._cmd_write, self._out_read):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()


class Page:
    """One tab: navigate, evaluate JavaScript, click, type, screenshot; records its requests and errors."""

    def __init__(self, browser: Browser, session: str, width: int, height: int) -> None:
        self.browser = browser
        self.session = session
        self.requests: list[str] = []
        self.exceptions: list[str] = []
        self.width, self.height = width, height
        browser.on_event(self._on_event)
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        # Runs before any page script (and outside the page's CSP): collects CSP violations for the test to read.
        self.send(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": "window.__csp = []; document.addEventListener('securitypolicyviolation', "
                "function (e) { window.__csp.push(e.violatedDirective + ' ' + e.blockedURI); });"
            },
        )

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("sessionId") != self.session:
            return
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), or CDPError on a thrown exception."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CDPError(str(details.get("exception", {}).get("description") or details.get("text")))
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0, interval: float = 0.05) -> Any:
        """Poll an expression until it is truthy (a navigation in progress counts as not yet)."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = self.evaluate(expression)
                if value:
                    return value
            except CDPError as exc:  # e.g. the execution context was replaced by a navigation
                last_error = str(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout}s: {expression} {last_error}".strip())
            time.sleep(interval)

    def goto(self, url: str, timeout: float = 15.0) -> None:
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {answer['errorText']}")
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout)

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the first element matching `selector` (of its first line box)."""
        box = self.wait_for(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); var r = e.getClientRects()[0];"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            params = {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}
            self.send("Input.dispatchMouseEvent", params)

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field, clear it and type text (fires `input` events as a user would)."""
        self.evaluate(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()"
        )
        self.send(
            "Input.dispatchKeyEvent",
            {"type": "keyDown", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
        )
        self.send(
            "Input.dispatchKeyEvent",
            {"type": "keyUp", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
        )
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        # Grow the viewport to the content, shoot, and put the viewport back (captureBeyondViewport leaves the
        # page's input coordinates off afterwards).
        size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        height = max(int(size[1]), self.height)
        metrics = {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)
        try:
            shot = self.send("Page.captureScreenshot", {"format": "png"})
        finally:
            metrics["height"] = self.height
            self.send("Emulation.setDeviceMetricsOverride", metrics)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
