"""Open a report page in headless Chromium and look at it, through the DevTools protocol.

Chromium is driven over ``--remote-debugging-pipe`` (JSON messages, NUL-terminated, on file
descriptors 3 and 4), which needs nothing beyond the standard library. :func:`inspect_page`
loads a page and returns what a reader would notice: console errors and uncaught
exceptions, images that did not load, every request that left the file (a report must
need no network), the rows of every table, and optionally a PNG screenshot.

    python -m atrous.report.browser reports/<id>/index.html --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1", "--remote-debugging-pipe")

#: Evaluated in the page once it has loaded: image states and table contents.
_PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc.slice(0, 60), complete: i.complete, width: i.naturalWidth})),
  tables: Object.fromEntries(Array.from(document.querySelectorAll('table[id]')).map(t => [
    t.id, Array.from(t.tBodies[0] ? t.tBodies[0].rows : []).map(
      r => Array.from(r.cells).map(c => c.textContent))])),
  title: document.title,
  height: document.documentElement.scrollHeight})"""


class BrowserError(RuntimeError):
    """Chromium could not be started or did not answer."""


@dataclass
class PageCheck:
    """What loading a page showed."""

    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: bytes | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        return [i for i in self.images if not i["complete"] or i["width"] == 0]

    @property
    def network_requests(self) -> list[str]:
        """Requests for anything but the file itself and data: URIs."""
        return [u for u in self.requests if not u.startswith(("file:", "data:"))]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """A DevTools connection over Chromium's pipe: send commands, collect events."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.out, self.inp = proc, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile are kept)."""
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for an event (or return one already received)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


@contextlib.contextmanager
def _chromium(executable: str):
    """A headless Chromium with a throw-away profile, connected through its pipe."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def child_fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4
        # Through fresh copies first: a pipe end may already sit on fd 3 or 4, where dup2
        # would be a no-op that keeps its close-on-exec flag, or be overwritten by the other.
        read_end, write_end = os.dup(to_r), os.dup(from_w)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    # Chromium's helper processes can still be writing into the profile as it is removed.
    with tempfile.TemporaryDirectory(prefix="atrous-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}",
                                 "about:blank"], preexec_fn=child_fds, close_fds=False,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        try:
            yield _Pipe(proc, to_w, from_r)
        finally:
            for fd in (to_w, from_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _console_error(event: dict[str, Any]) -> str | None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console." + params["type"] + ": " + " ".join(
            str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return "exception: " + str(details.get("exception", {}).get("description")
                                   or details.get("text"))
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
    return None


def inspect_page(path: str | Path, *, screenshot: bool = False, width: int = 1280,
                 height: int = 900, full_page: bool = False,
                 executable: str | None = None, timeout: float = 60.0) -> PageCheck:
    """Load ``path`` in headless Chromium and report what it showed.

    Args:
        path: an HTML file.
        screenshot: also take a PNG screenshot (``width`` x ``height`` CSS pixels, or the
            whole page when ``full_page``).
        executable: the browser (default: :func:`find_chromium`).
        timeout: seconds to wait for the page to load.

    Raises:
        BrowserError: no browser, or it failed to start or answer.
    """
    executable = executable or find_chromium()
    if executable is None:
        raise BrowserError("no Chromium found (apt-get install chromium)")
    url = Path(path).resolve().as_uri()
    with _chromium(executable) as pipe:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session)
        pipe.call("Page.navigate", {"url": url}, session=session)
        pipe.wait_for("Page.loadEventFired", timeout=timeout)
        probe = pipe.call("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True},
                          session=session)
        state = json.loads(probe["result"]["value"])
        shot = None
        if screenshot:
            params: dict[str, Any] = {"format": "png"}
            if full_page:
                params.update(captureBeyondViewport=True, clip={
                    "x": 0, "y": 0, "width": width, "height": state["height"], "scale": 1})
            shot = base64.b64decode(pipe.call("Page.captureScreenshot", params,
                                              session=session)["data"])
        check = PageCheck(images=state["images"], tables=state["tables"],
                          title=state["title"], screenshot=shot)
        for event in pipe.events:
            error = _console_error(event)
            if error:
                check.console_errors.append(error)
            if event.get("method") == "Network.requestWillBeSent":
                check.requests.append(event["params"]["request"]["url"])
        return check


def main(argv: list[str] | None = None) -> int:
    """Check a page and optionally save a screenshot; exit 1 when the page has problems."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page")
    parser.add_argument("--screenshot", help="write a PNG screenshot here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args(argv)
    check = inspect_page(args.page, screenshot=bool(args.screenshot), width=args.width,
                         height=args.height, full_page=args.full_page)
    if args.screenshot and check.screenshot:
        Path(args.screenshot).write_bytes(check.screenshot)
    print(f"{check.title}: {len(check.images)} images ({len(check.broken_images)} broken),"
          f" tables {', '.join(f'{k} ({len(v)} rows)' for k, v in check.tables.items())};"
          f" {len(check.console_errors)} console errors, {len(check.network_requests)}"
          " network requests")
    for error in check.console_errors:
        print("  ", error)
    return 1 if check.console_errors or check.broken_images or check.network_requests else 0


if __name__ == "__main__":
    sys.exit(main())
