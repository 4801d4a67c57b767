"""A real headless Chromium (Debian's /usr/bin/chromium) driven over the DevTools protocol on a pipe.

No network, no port: ``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and write replies
on fd 4 (JSON messages ending with a NUL byte). Used by the report tests to open the HTML file, check
what a person would see (every image decoded) and take a full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from typing_extensions import Self

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


class Browser:
    """One Chromium process with one page. Every wait is bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="eb-chromium-")
        self._log = open(os.path.join(self.profile, "stderr.log"), "wb")  # noqa: SIM115 - closed in close()
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # above any fd the child's dup2 onto 3 and 4 could clobber
        high_r, high_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 100), fcntl.fcntl(out_w, fcntl.F_DUPFD, 100)
        for fd in (cmd_r, out_w):
            os.close(fd)

        def child_fds() -> None:  # in the child: commands on fd 3, replies on fd 4
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log, pass_fds=(3, 4),
                                     preexec_fn=child_fds)  # noqa: PLW1509 - only dup2 before exec
        os.close(high_r)
        os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable", session=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError(f"chromium did not answer (exit {self.proc.poll()})")
            ready, _, _ = select.select([self._out_r], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: bool = False) -> dict[str, Any]:
        """Send one command; return its result (raise RuntimeError with its error)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        """The first event ``method`` seen (or the next one to come)."""
        for i, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self._events.append(event)

    def open(self, path: Path, width: int = 1280) -> None:
        """Load a local file and wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=True)
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, dest: Path) -> Path:
        """A full-page PNG of the open page."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        width = int(self.evaluate("document.documentElement.scrollWidth"))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False},
                  session=True)
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(dest).write_bytes(base64.b64decode(data))
        return Path(dest)

    def close(self) -> None:
        """Close the browser (by its own command, then by PID if it lingers) and remove its profile."""
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close")
                except (RuntimeError, TimeoutError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._cmd_w, self._out_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
