"""Open an HTML page in headless Chromium through Playwright and report what a reader would
notice: console errors and uncaught exceptions, images that did not load (or loaded with no
size), requests that left the file (a report must need no network), links that lead
nowhere, the rows of every table, and optionally a PNG screenshot.

Playwright drives the system's Chromium (Debian's ``chromium`` package, which ``.ci/run``
installs), never a browser of its own: its download cannot work on machines without
network access. Used by tests/test_browser.py and scripts/screenshot.py.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: Executables tried in order; the first found on PATH is used.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: A quiet, sandbox-free headless browser that talks to nothing but the page it loads.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

#: Evaluated in the loaded page: image states, table bodies, links and the title.
_PROBE = """() => ({
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc.slice(0, 60), complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight})),
  tables: Object.fromEntries(Array.from(document.querySelectorAll('table[id]')).map(t => [
    t.id, Array.from(t.tBodies[0] ? t.tBodies[0].rows : []).map(
      r => Array.from(r.cells).map(c => c.textContent.trim()))])),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  title: document.title})"""


class BrowserError(RuntimeError):
    """No browser was found, or it could not load the page."""


@dataclass
class PageCheck:
    """What loading one page showed."""

    path: Path
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        """Images that did not finish loading or decoded to no pixels."""
        return [i for i in self.images
                if not i["complete"] or i["width"] == 0 or i["height"] == 0]

    @property
    def network_requests(self) -> list[str]:
        """Requests for anything but local files and data: URIs."""
        return [u for u in self.requests if not u.startswith(("file:", "data:"))]

    @property
    def broken_links(self) -> list[str]:
        """Links to an anchor the page lacks, or to a local file that does not exist.

        External links (http:, https:, mailto:) count as broken too: a report is read
        offline and must stand on its own.
        """
        broken = []
        for href in self.links:
            parts = urlsplit(href)
            if parts.scheme and parts.scheme != "file":
                broken.append(href)
                continue
            if parts.path:
                target = Path(unquote(parts.path))
                if not target.is_absolute():
                    target = self.path.parent / target
                if not target.exists():
                    broken.append(href)
                    continue
                if parts.fragment and target.resolve() != self.path.resolve():
                    continue  # an anchor in another file: not checked here
            if parts.fragment and unquote(parts.fragment) not in self.ids:
                broken.append(href)
        return broken

    def problems(self) -> list[str]:
        """Every finding that makes the page unfit to publish, one line each."""
        return ([f"console: {e}" for e in self.console_errors]
                + [f"broken image: {i['src']}" for i in self.broken_images]
                + [f"network request: {u}" for u in self.network_requests]
                + [f"broken link: {h}" for h in self.broken_links])


def find_chromium() -> str | None:
    """The system's Chromium (or Chrome) executable on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(path: str | Path, *, screenshot: bool = False, width: int = 1280,
               height: int = 900, full_page: bool = False, executable: str | None = None,
               timeout_s: float = 60.0) -> PageCheck:
    """Load the HTML file ``path`` in headless Chromium and report what it showed.

    Args:
        path: an HTML file on disk.
        screenshot: also take a PNG screenshot of ``width`` x ``height`` CSS pixels (the
            whole page when ``full_page``).
        executable: the browser binary (default: :func:`find_chromium`).
        timeout_s: how long the page may take to load.

    Raises:
        BrowserError: no browser was found, or the page could not be loaded.
        FileNotFoundError: ``path`` does not exist.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    page_path = Path(path).resolve()
    if not page_path.is_file():
        raise FileNotFoundError(f"path: no such HTML file: {page_path}")
    executable = executable or find_chromium()
    if executable is None:
        raise BrowserError("no Chromium on PATH (apt-get install chromium)")
    check = PageCheck(path=page_path)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=FLAGS,
                                         headless=True, timeout=timeout_s * 1e3)
            try:
                page = browser.new_page(viewport={"width": width, "height": height},
                                        device_scale_factor=1)
                page.on("console", lambda m: check.console_errors.append(
                    f"console.{m.type}: {m.text}") if m.type in ("error", "assert") else None)
                page.on("pageerror", lambda e: check.console_errors.append(f"exception: {e}"))
                page.on("request", lambda r: check.requests.append(r.url))
                page.goto(page_path.as_uri(), wait_until="load", timeout=timeout_s * 1e3)
                state = page.evaluate(_PROBE)
                if screenshot:
                    check.screenshot = page.screenshot(full_page=full_page, type="png")
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise BrowserError(f"Chromium ({executable}) could not load {page_path}: {exc}") from exc
    check.title = state["title"]
    check.images = state["images"]
    check.tables = state["tables"]
    check.links = state["links"]
    check.ids = set(state["ids"])
    return check
