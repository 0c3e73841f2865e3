"""Browser-test harness: Playwright's sync API driving Debian's Chromium (``/usr/bin/chromium``).

Fixtures:
  browser               session-scoped Chromium (headless); one per test session.
  browser_context_args  dict of options for each test's browser context; override it in a test
                        module or conftest (e.g. ``{"base_url": live_stack.url}``).
  page                  a fresh context and page per test, closed afterwards. When the test fails,
                        a full-page screenshot goes to test-artifacts/screenshots/<test name>.png
                        and the page's JavaScript errors are printed into the report.
  screenshot            ``screenshot(page, name)`` saves test-artifacts/screenshots/<name>.png
                        (for humans to look at) and returns the path.

Never downloads a browser (no ``playwright install``). Where /usr/bin/chromium is missing the
browser tests skip, unless OFFICINA_REQUIRE_BROWSER=1 (CI), where they fail.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
MISSING_MESSAGE = (
    f"Chromium not found at {CHROMIUM}; install Debian's chromium package (apt-get install chromium)"
)
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DEFAULT_TIMEOUT_MS = 10_000  # fail fast instead of Playwright's 30 s default
NAVIGATION_TIMEOUT_MS = 20_000

_phase_reports = pytest.StashKey[dict]()


def _browser_required() -> bool:
    return os.environ.get("OFFICINA_REQUIRE_BROWSER") == "1"


def _unavailable(message: str) -> None:
    if _browser_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def safe_name(name: str) -> str:
    """A test or screenshot name as a file name: ``test_x[a/b]`` -> ``test_x-a-b``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return cleaned or "screenshot"


def _save_screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{safe_name(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def pytest_collection_modifyitems(config, items) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so ``page`` can tell at teardown that a test failed."""
    report = yield
    item.stash.setdefault(_phase_reports, {})[report.when] = report
    return report


def _failed(node) -> bool:
    reports = node.stash.get(_phase_reports, {})
    return any(r.failed for r in reports.values())


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        _unavailable(MISSING_MESSAGE)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is a dev dependency
        _unavailable(f"playwright is not installed ({exc}); pip install -e '.[dev]'")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_context_args() -> dict:
    """Options for ``browser.new_context``; override to add ``base_url``, ``locale`` and so on."""
    return {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture
def page(browser, browser_context_args, request) -> Iterator[object]:
    context = browser.new_context(**browser_context_args)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    pg = context.new_page()
    js_errors: list[str] = []
    pg.on("pageerror", lambda exc: js_errors.append(f"pageerror: {exc}"))
    pg.on("console", lambda msg: js_errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    try:
        yield pg
    finally:
        try:
            if _failed(request.node):
                try:
                    path = _save_screenshot(pg, request.node.name)
                    print(f"screenshot of the failed test: {path}")
                except Exception as exc:  # the page may be closed or crashed
                    print(f"could not save a screenshot of the failed test: {exc}")
                for line in js_errors:
                    print(line)
        finally:
            context.close()


@pytest.fixture
def screenshot() -> Callable[[object, str], Path]:
    """``screenshot(page, name)``: save test-artifacts/screenshots/<name>.png and return its path."""
    return _save_screenshot

