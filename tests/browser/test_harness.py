"""The browser harness itself: Chromium opens a local page, runs its JavaScript, takes a screenshot."""
from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Officina harness</title>
<style>body { font-family: sans-serif; margin: 3rem; } #status { font-size: 2rem; }</style>
</head>
<body>
  <h1>Browser harness</h1>
  <p id="status">waiting</p>
  <button id="go" type="button">Press me</button>
  <script>
    document.getElementById("go").addEventListener("click", () => {
      document.getElementById("status").textContent = "clicked " + (6 * 7);
    });
  </script>
</body>
</html>
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass


@pytest.fixture
def static_site(tmp_path: Path):
    """Serves tmp_path over HTTP on a free 127.0.0.1 port; yields the base URL."""
    (tmp_path / "index.html").write_text(PAGE, encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_click_changes_text_and_screenshot(page, static_site, screenshot):
    page.goto(f"{static_site}/index.html")
    assert page.title() == "Officina harness"
    status = page.locator("#status")
    assert status.text_content() == "waiting"

    page.get_by_role("button", name="Press me").click()

    status.filter(has_text="clicked 42").wait_for()
    assert status.text_content() == "clicked 42"
    path = screenshot(page, "harness-clicked")
    assert path.name == "harness-clicked.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_test_gets_a_fresh_context(page, static_site):
    # No cookies or storage leak from the previous test's context.
    page.goto(f"{static_site}/index.html")
    assert page.context.cookies() == []
    assert page.evaluate("() => window.localStorage.length") == 0
