"""The report in a real browser: headless Debian Chromium renders it, and it asks the network for nothing.

Skipped only when chromium (or chromedriver, for the network capture) is missing and
FHIR_REQUIRE_BROWSER is unset; CI sets it, so there a missing browser fails. Every browser started
here gets a proxy on a closed loopback port and a host resolver that resolves nothing, so even a
stray request could not leave the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapter.report import write_report

pytestmark = pytest.mark.browser

DATA = Path(__file__).parent / "data"
WINDOW = (1280, 2000)
# Never let the browser reach anything: a dead loopback proxy and an empty host resolver.
CONTAINED = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def _required() -> bool:
    return os.environ.get("FHIR_REQUIRE_BROWSER", "").strip().lower() not in ("", "0", "false", "no")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: apt-get install chromium chromium-driver)"
        if _required():
            pytest.fail(message + "; FHIR_REQUIRE_BROWSER is set")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return _tool("chromium")


@pytest.fixture(scope="module")
def chromedriver() -> str:
    return _tool("chromedriver")


def _report(tmp_path: Path, name: str = "normal") -> tuple[Path, dict[str, Any]]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    html = tmp_path / f"{name}.html"
    write_report(result, html, None)
    return html, result


def _run(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium, "--headless", *CONTAINED, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
        stdin=subprocess.DEVNULL,
    )


class _Dom(HTMLParser):
    """Elements of the serialized DOM, as (tag, attributes) in document order, plus the text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _expected_worklist(result: dict[str, Any]) -> list[str]:
    rows = [
        (sum(c["verdict"] == "unknown" for c in s["criteria"]), s["patient"])
        for s in result["subjects"]
        if s["status"] in ("candidate", "potential-candidate")
    ]
    return [p for _, p in sorted(rows)]


def test_rendered_dom_has_funnel_and_worklist(chromium: str, tmp_path: Path) -> None:
    html, result = _report(tmp_path)
    out = _run(chromium, tmp_path, "--dump-dom", html.as_uri()).stdout
    dom = _Dom()
    dom.feed(out)
    els = dom.elements
    ids = {a.get("id") for _, a in els}
    assert {"funnel", "funnel-table", "worklist-table", "patients", "status-counts"} <= ids
    criteria = [a["data-criterion"] for t, a in els if t == "g" and "data-criterion" in a]
    assert criteria[0] == "age" and criteria[-1] == "mental-illness" and len(criteria) == 18
    assert sum(1 for t, a in els if t == "svg" and a.get("class") == "funnel") == 1
    worklist = [a["data-patient"] for t, a in els if t == "tr" and "data-patient" in a]
    assert worklist == _expected_worklist(result)
    text = " ".join("".join(dom.text).split())
    assert "Screening funnel" in text and "Worklist" in text
    assert "no CK, aldolase, LDH, ALT or AST in the last 90 days" in text


def test_rendered_worklist_shows_values_found_in_notes(chromium: str, tmp_path: Path) -> None:
    html, result = _report(tmp_path, "notes")
    out = _run(chromium, tmp_path, "--dump-dom", html.as_uri()).stdout
    dom = _Dom()
    dom.feed(out)
    text = " ".join("".join(dom.text).split())
    assert "note of 2026-06-01 says MMT-8: 118/150: confirm and record" in text
    assert "in a note" in text and "(DocumentReference/dm24-note12)" in text
    lists = [a.get("class", "") for t, a in dom.elements if t == "ul"]
    assert "resolve from-notes" in lists and "suggest" in lists
    worklist = [a["data-patient"] for t, a in dom.elements if t == "tr" and "data-patient" in a]
    assert worklist == _expected_worklist(result)


def test_screenshot_and_print(chromium: str, tmp_path: Path) -> None:
    html, _ = _report(tmp_path)
    shot = tmp_path / "report.png"
    _run(chromium, tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", html.as_uri())
    data = shot.read_bytes()
    assert _png_size(data) == WINDOW
    assert len(data) > 20_000  # a blank page compresses to a few kB
    pdf = tmp_path / "report.pdf"
    _run(chromium, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html.as_uri())
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-")
    assert raw.count(b"/Type /Page\n") + raw.count(b"/Type /Page ") + raw.count(b"/Type /Page/") >= 2


def test_empty_report_renders(chromium: str, tmp_path: Path) -> None:
    html, _ = _report(tmp_path, "empty")
    out = _run(chromium, tmp_path, "--dump-dom", html.as_uri()).stdout
    assert "No patients were screened" in out


# --- network capture through chromedriver's performance log -------------------------------------------


class _WebDriver:
    """Just enough of the W3C WebDriver protocol (plus chromedriver's log endpoint) over loopback HTTP."""

    def __init__(self, chromedriver: str, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.http = requests.Session()
        self.http.trust_env = False  # never through a proxy from the environment
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.session = ""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get(f"{self.base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail("chromedriver did not start")
            time.sleep(0.1)
        profile = tmp_path / "wd-profile"
        profile.mkdir()
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": shutil.which("chromium") or "chromium",
                "args": [
                    "--headless=new",
                    *CONTAINED,
                    f"--user-data-dir={profile}",
                    f"--window-size={WINDOW[0]},{WINDOW[1]}",
                ],
                "perfLoggingPrefs": {"enableNetwork": True, "enablePage": False},
            },
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.base + (path if path == "/session" else f"/session/{self.session}{path}")
        response = self.http.request(method, url, json=body, timeout=120)
        value = response.json()["value"]
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def log(self, kind: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self._call("POST", "/se/log", {"type": kind})
        return entries

    def requested_urls(self) -> list[str]:
        urls = []
        for entry in self.log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", "/elements", {"using": "css selector", "value": css})
        return [next(iter(el.values())) for el in found]

    def rect(self, element: str) -> dict[str, float]:
        rect: dict[str, float] = self._call("GET", f"/element/{element}/rect")
        return rect

    def close(self) -> None:
        try:
            if self.session:
                self.http.delete(f"{self.base}/session/{self.session}", timeout=60)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


@pytest.fixture
def webdriver(chromium: str, chromedriver: str, tmp_path: Path) -> Iterator[_WebDriver]:
    driver = _WebDriver(chromedriver, tmp_path)
    try:
        yield driver
    finally:
        driver.close()


def test_no_request_leaves_the_page(webdriver: _WebDriver, tmp_path: Path) -> None:
    html, result = _report(tmp_path)
    # The capture sees requests: a page that does load remote things shows them (they fail locally).
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://report-test.invalid/a.css"/>'
        '</head><body><img src="http://report-test.invalid/b.png" alt=""/></body></html>',
        encoding="utf-8",
    )
    webdriver.get("about:blank")
    webdriver.log("performance")  # drop what the browser did before our page
    webdriver.get(leaky.as_uri())
    time.sleep(0.5)
    leaked = webdriver.requested_urls()
    assert "https://report-test.invalid/a.css" in leaked and "http://report-test.invalid/b.png" in leaked

    webdriver.get("about:blank")
    webdriver.log("performance")
    webdriver.log("browser")
    webdriver.get(html.as_uri())
    time.sleep(0.5)
    assert webdriver.requested_urls() == [html.as_uri()]
    # Nothing blocked by the page's own CSP, no console errors.
    problems = [e["message"] for e in webdriver.log("browser") if e.get("level") in ("SEVERE", "WARNING")]
    assert problems == []

    # The layout is real: the funnel has a size, one bar per criterion, the worklist its rows.
    (svg,) = webdriver.find_all("svg.funnel")
    box = webdriver.rect(svg)
    assert box["width"] > 600 and box["height"] > 300
    assert len(webdriver.find_all("svg.funnel g[data-criterion]")) == 18
    assert len(webdriver.find_all("#worklist-table tbody tr")) == len(_expected_worklist(result))
    for seg in webdriver.find_all("svg.funnel rect.seg-unknown"):
        assert webdriver.rect(seg)["width"] > 0
