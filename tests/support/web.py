"""The browser pages' shared checks (tests/test_web.py, tests/test_monitor.py): every link of a page is a
path on this server, and the system's Chromium to drive them (never a downloaded browser)."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser

HTML = {"Accept": "text/html"}


class Links(HTMLParser):
    """Every `src`, `href` and `integrity` attribute of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.integrity: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        ref = values.get("src") or values.get("href")
        if ref is not None:
            self.refs.append(ref)
            if values.get("integrity"):
                self.integrity[ref] = values["integrity"] or ""


def assert_local_only(html: str) -> Links:
    """No URL with a scheme or a host anywhere in the page; every link is a path on this server."""
    assert not re.search(r"(?i)\b(https?|wss?):?//[a-z0-9]", html), re.findall(r"(?i)\S*//[a-z0-9]\S*", html)
    assert "unpkg" not in html and "cdn" not in html.lower()
    links = Links(html)
    for ref in links.refs:
        # a path on this server, the empty icon, or a place on the same page (the skip link)
        assert (ref.startswith("/") and not ref.startswith("//")) or ref == "data:," or ref.startswith("#"), (
            ref
        )
    return links


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
