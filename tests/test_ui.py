"""The web UI end to end: headless Chromium (Debian's ``chromium``, driven by Playwright through
its executable path) against a real ``cloudinv demo`` whose simulated estate keeps changing.

One demo serves the whole module. Each test drives the page as a person would (links, the
time slider, tabs, the keyboard) and checks what it shows against the API the page reads:
counts, a resource's id, a diff row with a highlighted path, a change arriving on the live
feed, a principal's chart with bars. Skipped only when the browser is not installed
(``apt-get install chromium``; CI installs it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudinv.sinks.alerts_store import AlertsStore, Observation
from tests.cli_helpers import REPO, cli_env

CHROMIUM = "/usr/bin/chromium"
DEMO_COMMAND = [sys.executable, "-m", "cloudinv", "demo", "--api-port", "0"]
DEMO_COMMAND += ["--scan-interval", "10", "--mutate-interval", "2"]
"""The demo as the UI is tested and shown: scans every 10 s, the estate changes every 2 s."""

# Page scripts: the number of renders so far; whether the page has drawn render n+1 since;
# go to a hash route (re-render when it is the current one).
JS_RENDERS = "() => Number(document.getElementById('main').dataset.rendered || 0)"
JS_RENDERED_AFTER = """(n) => {
  const m = document.getElementById('main');
  return Number(m.dataset.rendered || 0) > n && !m.hasAttribute('aria-busy');
}"""
JS_GO = """(hash) => {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}"""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium reaches for Google's services, which this network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is not installed (apt-get install chromium)"
)


# -- the demo ---------------------------------------------------------------------------------


class Api:
    def __init__(self, info: dict[str, Any]) -> None:
        self.url: str = info["api_url"]
        self.token: str = info["api_token"]
        self.data_dir = Path(info["data_dir"])

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(f"{self.url}{path}{'?' + query if query else ''}")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self, path: str, token: str | None = None) -> int:
        request = urllib.request.Request(f"{self.url}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def all_items(self, path: str, **params: Any) -> list[Any]:
        items: list[Any] = []
        cursor = None
        while True:
            page = self.get(path, **params, limit=1000, cursor=cursor)
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    def vpcs(self) -> int:
        types = self.get("/v1/types")["items"]
        return next((t["resources"] for t in types if t["type"] == "AWS::EC2::VPC"), 0)

    def first_scan_stored(self) -> bool:
        """A scan round finished and its VPCs (which the demo never changes) are all stored:
        the same count three times over two seconds."""
        rounds = self.get("/v1/status").get("stats", {}).get("scans", {}).get("rounds", 1)
        if not rounds:
            return False
        seen = []
        for _ in range(3):
            seen.append(self.vpcs())
            time.sleep(1)
        return seen[0] > 0 and len(set(seen)) == 1

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = probe()
            except (urllib.error.URLError, OSError):
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not produce {what} in {timeout:.0f} s")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A running ``cloudinv demo`` (see DEMO_COMMAND)."""
    work = tmp_path_factory.mktemp("ui-demo")
    data = work / "data"
    stderr = work / "demo.stderr"
    proc = subprocess.Popen(
        [*DEMO_COMMAND, "--data-dir", str(data)],
        cwd=work,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w"),
    )
    try:
        deadline = time.monotonic() + 120
        while not (data / "demo.json").exists():
            if proc.poll() is not None:
                pytest.fail(f"demo exited {proc.returncode}: {stderr.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"demo not ready in 120 s: {stderr.read_text()[-3000:]}")
            time.sleep(0.2)
        running = Api(json.loads((data / "demo.json").read_text()))
        running.wait_for("resources", lambda: running.get("/v1/resources", limit=1)["items"])
        running.wait_for("a settled first scan", running.first_scan_stored, timeout=60)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A browser tab signed in to the demo, failing the test on any JavaScript error."""

    def __init__(self, browser: Any, api: Api, width: int = 1280, height: int = 800) -> None:
        self.api = api
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        # Waits are for conditions; the deadline only bounds a hang. A loaded CI machine
        # (other suites beside this one) can take many seconds to draw a page.
        self.page.set_default_timeout(60000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def sign_in(self, route: str = "/inventory") -> None:
        token = urllib.parse.quote(self.api.token)
        self.page.goto(f"{self.api.url}/#token={token}&{route}")
        self.wait_rendered(0)

    def rendered(self) -> int:
        return int(self.page.evaluate(JS_RENDERS))

    def wait_rendered(self, after: int) -> None:
        """Until the page has drawn what it loaded (main[data-rendered] grows, not busy)."""
        self.page.wait_for_function(JS_RENDERED_AFTER, arg=after)

    def go(self, route: str) -> float:
        """Open a hash route; returns the seconds until it was drawn."""
        before = self.rendered()
        started = time.monotonic()
        self.page.evaluate(JS_GO, route)
        self.wait_rendered(before)
        return time.monotonic() - started

    def click_and_wait(self, selector: str) -> None:
        before = self.rendered()
        self.page.click(selector)
        self.wait_rendered(before)

    def hash_params(self) -> dict[str, str]:
        hash_ = self.page.evaluate("() => location.hash")
        return dict(urllib.parse.parse_qsl(hash_.partition("?")[2]))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, api: Api) -> Iterator[Page]:
    page = Page(browser, api)
    try:
        yield page
        assert page.errors == [], f"JavaScript errors: {page.errors}"
    finally:
        page.close()


def count_of(page: Any, selector: str, attribute: str = "data-count") -> int:
    return int(page.get_attribute(selector, attribute))


# -- the tests --------------------------------------------------------------------------------


def test_the_ui_is_served_openly_but_its_data_needs_the_token(api: Api) -> None:
    assert api.status("/") == 200
    assert api.status("/ui/js/main.js") == 200
    assert api.status("/ui/app.css") == 200
    assert api.status("/ui/missing.js") == 404
    assert api.status("/ui/%2e%2e/ui.py") == 404  # nothing outside the UI directory
    assert api.status("/v1/resources") == 401  # the page's data is the API's, token required
    page = urllib.request.urlopen(f"{api.url}/", timeout=10)
    html = page.read().decode()
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    # Nothing loaded from elsewhere: every script, stylesheet, import and fetch is our own.
    remote = re.compile(
        r"""(?:src|href)\s*=\s*["'](?:https?:)?//|from\s+["'](?:https?:)?//"""
        r"""|import\(\s*["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//|fetch\(\s*["'](?:https?:)?//"""
    )
    assert not remote.search(html)
    for path in (REPO / "api" / "ui").rglob("*"):
        if path.suffix in (".js", ".css", ".html", ".svg"):
            assert not remote.search(path.read_text()), path


def test_sign_in_asks_for_the_token_once_and_rejects_a_wrong_one(browser: Any, api: Api) -> None:
    tab = Page(browser, api)
    try:
        tab.page.goto(f"{api.url}/")
        tab.page.wait_for_selector("#signin")
        tab.page.fill("#signin input", "ci_not-a-token")
        tab.page.click("#signin button[type=submit]")
        tab.page.wait_for_selector("text=That token was not accepted.")
        tab.page.fill("#signin input", api.token)
        before = tab.rendered()
        tab.page.click("#signin button[type=submit]")
        tab.wait_rendered(before)
        tab.page.wait_for_selector("#resource-total")
        # Kept for the tab's session only, and used on every request from then on.
        stored = tab.page.evaluate("() => sessionStorage.getItem('cloudinv.token')")
        assert stored == api.token
        assert tab.errors == []
    finally:
        tab.close()


def test_inventory_shows_counts_and_moves_back_in_time(tab: Page, api: Api) -> None:
    tab.sign_in("/inventory")
    # Types with counts: a type the estate does not change matches the API exactly.
    vpcs = api.vpcs()
    assert vpcs > 0
    assert count_of(tab.page, '#type-list a[data-type="AWS::EC2::VPC"]') == vpcs
    now_total = count_of(tab.page, "#resource-total")
    assert now_total >= vpcs
    assert tab.page.locator("#resource-list tbody tr").count() > 0

    # Back in time with the keyboard: the slider's start is the first change ever recorded.
    tab.page.focus("#time-slider")
    before = tab.rendered()
    tab.page.keyboard.press("Home")
    tab.wait_rendered(before)
    tab.page.wait_for_selector("#time-travel-banner")
    at = tab.hash_params()["at"]
    then = api.all_items("/v1/resources", at=at)
    shown = count_of(tab.page, "#resource-total")
    assert 0 < shown == len(then)
    assert shown < now_total  # the estate grew after its first change
    keys = tab.page.eval_on_selector_all(
        "#resource-list a.resource-link", "links => links.map(a => a.dataset.key)"
    )
    assert keys and set(keys) <= {r["key"] for r in then}

    # A type filter at that time, and back to now.
    tab.go(f"#/inventory?type=AWS%3A%3AEC2%3A%3AVPC&at={urllib.parse.quote(at)}")
    expected = sum(1 for r in then if r["resource_type"] == "AWS::EC2::VPC")
    rows = tab.page.locator("#resource-list tbody tr").count()
    assert rows == min(expected, 50)
    tab.click_and_wait("#time-now")
    assert "at" not in tab.hash_params()
    assert count_of(tab.page, '#type-list a[data-type="AWS::EC2::VPC"]') == vpcs


def test_inventory_fits_a_narrow_screen(browser: Any, api: Api) -> None:
    tab = Page(browser, api, width=420, height=900)
    try:
        tab.sign_in("/inventory")
        tab.page.wait_for_selector("#resource-list tbody tr")
        width = tab.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways at 420 px ({width} px wide)"
        assert tab.errors == []
    finally:
        tab.close()


def _modified_security_group(api: Api) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        page = api.get("/v1/changes", type="AWS::EC2::SecurityGroup", change_type="modified")
        return page["items"][-1] if page["items"] else None

    # The demo opens and closes SSH on its security groups every few changes.
    found: dict[str, Any] = api.wait_for("a modified security group", probe, timeout=60)
    return found


def test_resource_page_history_and_diff(tab: Page, api: Api) -> None:
    change = _modified_security_group(api)
    key, resource_id = change["key"], change["resource_id"]
    tab.sign_in("/inventory")
    # Find it as a person would: its type, then search by its id, then open it.
    tab.go(f"#/inventory?type=AWS%3A%3AEC2%3A%3ASecurityGroup&q={resource_id}")
    link = f'#resource-list a.resource-link[data-key="{key}"]'
    tab.click_and_wait(link)
    assert tab.page.inner_text("#resource-id") == resource_id
    tree = tab.page.inner_text(".tree")
    assert "GroupId" in tree and resource_id in tree
    # A list of tags shows each as `key = value`, not as its index and field count.
    stored = api.get(f"/v1/resources/{urllib.parse.quote(key, safe='')}")
    for tag in stored["configuration"].get("Tags", [])[:3]:
        assert f"{tag['Key']} = {tag['Value']}" in tree, tree

    # Tabs work from the keyboard: arrow right from Configuration opens History.
    tab.page.focus("#tab-config")
    before = tab.rendered()
    tab.page.keyboard.press("ArrowRight")
    tab.wait_rendered(before)
    assert tab.hash_params()["tab"] == "history"
    history = api.get(f"/v1/resources/{urllib.parse.quote(key, safe='')}/history")["items"]
    assert tab.page.locator("#history-list > li").count() == len(history) >= 2

    # The diff of that change: the changed path is a highlighted row on both sides.
    tab.click_and_wait(f'#history-list li[data-change-id="{change["change_id"]}"] a.diff-link')
    assert tab.hash_params() == {"tab": "diff", "change": change["change_id"]}
    changed = tab.page.locator("table.diff tr.diff-row:not(.same)")
    assert changed.count() > 0
    paths = [changed.nth(i).get_attribute("data-path") for i in range(changed.count())]
    assert all(
        any(p == c or p.startswith(c + "/") for c in change["changed_paths"]) for p in paths
    ), (paths, change["changed_paths"])
    assert changed.first.locator("mark").count() >= 1
    summary = tab.page.inner_text("#diff-summary")
    assert f"{len(paths)} path" in summary


def test_live_feed_shows_a_change_as_it_happens(tab: Page, api: Api) -> None:
    tab.sign_in("/feed?change_type=modified")
    tab.page.wait_for_selector("#feed-status.live")
    # What the page listed when it opened is not live (a change may already have arrived
    # by now: the estate changes every 2 s, so no count of live items is asserted).
    listed = set(
        tab.page.eval_on_selector_all(
            '#feed-list li:not([data-live="1"])', "els => els.map((e) => e.dataset.changeId)"
        )
    )
    # The estate changes every 2 s; CloudTrail names who did it, and the change is described
    # again at once: an attributed modification arrives by itself.
    arrived = tab.page.wait_for_selector(
        '#feed-list li[data-live="1"]:has(a.principal-link)', timeout=120000
    )
    change_id = arrived.get_attribute("data-change-id")
    assert change_id not in listed
    key = arrived.get_attribute("data-key")
    stored = {c["change_id"]: c for c in api.get("/v1/changes", key=key, limit=1000)["items"]}
    assert stored[change_id]["change_type"] == "modified"  # the filter went to the server
    # Its attribution links to the principal's page, its diff is one click away.
    who = stored[change_id]["attribution"]
    principal = arrived.query_selector("a.principal-link")
    assert principal is not None
    expected = urllib.parse.quote(who["principal_arn"] or who["principal_name"], safe="")
    assert principal.get_attribute("href") == f"#/principal/{expected}"
    assert who["event_name"] in arrived.inner_text()
    diff_link = arrived.query_selector("a.diff-link")
    assert diff_link is not None
    assert f"change={change_id}" in (diff_link.get_attribute("href") or "")
    before = tab.rendered()
    diff_link.click()
    tab.wait_rendered(before)
    tab.page.wait_for_selector("table.diff tr.diff-row:not(.same)")
    assert tab.hash_params()["change"] == change_id
    assert who["event_name"] in tab.page.inner_text("#diff-attribution")


def test_activity_dashboard_and_a_principals_chart(tab: Page, api: Api) -> None:
    api.wait_for("CloudTrail principals", lambda: api.get("/v1/principals")["items"])
    tab.sign_in("/activity?range=1h")
    tab.go("#/activity?range=1h")  # how fast it draws is bench material, not a test's
    assert tab.page.get_attribute("#range-1h", "aria-pressed") == "true"
    assert tab.page.locator("#services-chart svg rect.bar").count() > 0
    # A service has one colour: its bar beside the chart matches its swatch in the legend.
    legend, bars = tab.page.evaluate(
        """() => {
          const colour = (el) => [...(el?.classList || [])].find((c) => /^c[0-9]+$/.test(c));
          const legend = [...document.querySelectorAll('#services-chart ul.legend li')]
            .map((li) => [li.textContent.trim(), colour(li.querySelector('.swatch'))]);
          const bars = [...document.querySelectorAll('#services-bars li')]
            .map((li) => [li.querySelector('.hbar-label [title]').getAttribute('title'),
                          colour(li.querySelector('rect.bar'))]);
          return [legend, bars];
        }"""
    )
    in_legend = dict(legend)
    compared = [(name, c) for name, c in bars if name in in_legend]
    assert compared or len(legend) <= 1, (legend, bars)
    assert all(c == in_legend[name] for name, c in compared), (legend, bars)
    events = int(tab.page.inner_text("#tile-events .tile-value").replace(",", ""))
    assert events > 0
    # Every event is in the per-principal chart too (the quieter ones as 'other').
    charted = tab.page.evaluate(
        """() => Object.fromEntries(['services-chart', 'principals-chart'].map((id) => [id,
          [...document.querySelectorAll(`#${id} svg rect.bar`)]
            .reduce((n, bar) => n + Number(bar.dataset.value || 0), 0)]))"""
    )
    assert charted["principals-chart"] == charted["services-chart"] > 0, charted

    # The busiest principal's page: a bar chart of its calls over time.
    first = tab.page.locator("#top-principals a.principal-link").first
    label = first.get_attribute("title")
    tab.click_and_wait("#top-principals a.principal-link >> nth=0")
    assert tab.page.inner_text("#principal-title") == _short(label)
    bars = tab.page.locator("#activity-chart svg rect.bar")
    assert bars.count() > 0
    charted = sum(int(bars.nth(i).get_attribute("data-value")) for i in range(bars.count()))
    shown = int(tab.page.inner_text("#principal-tiles #tile-events .tile-value").replace(",", ""))
    their = api.get("/v1/events", principal=label, count="true", **{"from": _hours_ago(1)})
    assert charted == shown
    assert abs(shown - their["count"]) <= 5  # the estate keeps changing while we look

    # Another time frame from the presets.
    tab.click_and_wait("#range-6h")
    assert tab.hash_params()["range"] == "6h"
    assert tab.page.locator("#activity-chart svg rect.bar").count() > 0


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _fitted(age: float) -> str:
    """The preset that holds data that began ``age`` seconds ago (the page's choice)."""
    return "1h" if age <= 3600 else "6h" if age <= 6 * 3600 else "24h"


def test_activity_opens_on_a_range_that_holds_the_data(tab: Page, api: Api) -> None:
    """Opened without a time frame, a fresh demo's activity is not one spike at the right
    edge of a day: the page picks the shortest preset that holds every event so far, and
    the address says so (Back and reload show the same)."""
    known = api.wait_for("CloudTrail principals", lambda: api.get("/v1/principals")["items"])
    earliest = min(_parse_time(p["first_seen"]) for p in known)
    tab.sign_in("/activity")
    expected = _fitted(time.time() - earliest)
    assert expected != "24h"  # the module's demo is minutes old
    assert tab.hash_params() == {"range": expected}
    assert tab.page.get_attribute(f"#range-{expected}", "aria-pressed") == "true"
    assert tab.page.get_attribute("#range-24h", "aria-pressed") == "false"
    assert tab.page.locator("#services-chart svg rect.bar").count() > 0
    # Another preset is a new history entry; Back returns to the fitted one, not to a bare
    # address that would choose again.
    tab.click_and_wait("#range-6h")
    assert tab.hash_params() == {"range": "6h"}
    before = tab.rendered()
    tab.page.go_back()
    tab.wait_rendered(before)
    assert tab.hash_params() == {"range": expected}
    assert tab.page.get_attribute(f"#range-{expected}", "aria-pressed") == "true"
    # A principal's page does the same with its own events.
    first = min(known, key=lambda p: _parse_time(p["first_seen"]))
    tab.go(f"#/principal/{urllib.parse.quote(first['label'], safe='')}")
    assert tab.hash_params() == {"range": _fitted(time.time() - _parse_time(first["first_seen"]))}
    assert tab.page.locator("#activity-chart svg rect.bar").count() > 0


def test_the_account_menu_counts_the_estate_as_of_the_time_shown(tab: Page, api: Api) -> None:
    tab.sign_in("/inventory")
    menu = """() => [...document.querySelectorAll('#filter-account option')]
      .map(o => [o.value, o.textContent])"""

    def counts(options: list[list[str]]) -> dict[str, int]:
        found = {}
        for value, text in options:
            if value:
                match = re.fullmatch(rf"{value} \(([\d,]+)\)", text)
                assert match, text
                found[value] = int(match.group(1).replace(",", ""))
        return found

    now = counts(tab.page.evaluate(menu))
    assert now and sum(now.values()) > 0
    # The first moment of history: the estate was smaller, and the menu says how small.
    tab.page.focus("#time-slider")
    before = tab.rendered()
    tab.page.keyboard.press("Home")
    tab.wait_rendered(before)
    at = tab.hash_params()["at"]
    then = counts(tab.page.evaluate(menu))
    listed: dict[str, int] = {}
    for r in api.all_items("/v1/resources", at=at):
        listed[r["account_id"]] = listed.get(r["account_id"], 0) + 1
    assert {a: n for a, n in then.items() if n} == listed  # what existed then, per account
    assert sum(then.values()) < sum(now.values())
    # The total beside the types is the same count (from /v1/types as of that time).
    assert count_of(tab.page, "#resource-total") == sum(listed.values())
    tab.click_and_wait("#time-now")
    assert counts(tab.page.evaluate(menu)).keys() == now.keys()


PAGING_RULE = "ui-paging-check"
PAGING_ALERTS = 2050
JS_LIST_ROWS = """(id) => [...document.querySelectorAll(`#${id} tbody tr`)]
  .map((tr) => [tr.dataset.alertId, tr.dataset.severity])"""
JS_MORE_SETTLED = """([id, button, before]) => {
  const more = document.getElementById(button);
  const rows = document.querySelectorAll(`#${id} tbody tr`).length;
  return rows > before || !more || !more.disabled;
}"""


def _open_info_alerts(data_dir: Path, count: int) -> list[str]:
    """Open ``count`` info alerts of a rule the demo does not have, in the demo's own alerts
    store (this process writing it as a second worker would); their ids, most recently
    opened first (the API's order)."""

    async def seed() -> list[str]:
        store = AlertsStore.in_data_dir(data_dir)
        await store.open()
        try:
            now = datetime.now(UTC)
            made = await store.apply(
                [
                    Observation(
                        rule_id=PAGING_RULE,
                        title="paging check",
                        severity="info",
                        kind="state",
                        key=f"arn:aws:s3:::ui-paging-{n:04d}",
                        account_id="123456789012",
                        region="us-east-1",
                        opens=True,
                        holds=True,
                        at=now - timedelta(seconds=n),
                        cause=f"ui-paging-{n}",
                    )
                    for n in range(count)
                ]
            )
            return [n.alert.alert_id for n in made]
        finally:
            await store.close()

    # Playwright's sync API keeps an event loop running in this thread: the store's own
    # loop runs in another.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, seed()).result()


def _show_all(tab: Page, list_id: str, button_id: str) -> list[tuple[str, str]]:
    """Click "Show more" until the list has no more; the rows then shown. A live refresh may
    redraw the list while a page loads (the click is then dropped): the button is clicked
    again."""
    clicks = 0
    while tab.page.locator(f"#{button_id}").count():
        before = len(tab.page.evaluate(JS_LIST_ROWS, list_id))
        tab.page.click(f"#{button_id}")
        tab.page.wait_for_function(JS_MORE_SETTLED, arg=[list_id, button_id, before])
        clicks += 1
        assert clicks < 100, "the list never ended"
    return [tuple(row) for row in tab.page.evaluate(JS_LIST_ROWS, list_id)]


def test_every_alert_is_reached_by_paging_through_the_api(tab: Page, api: Api) -> None:
    """Many pages of alerts (100 rows a page, read from the API by its cursor), more than the
    2,000 the page once read in all: "Show more" reads the next page until every one is
    shown, in the API's order; without a severity filter the list goes one severity after
    another, most severe first, and still reaches them."""
    seeded = _open_info_alerts(api.data_dir, PAGING_ALERTS)
    assert len(seeded) == PAGING_ALERTS
    listed = [a["alert_id"] for a in api.all_items("/v1/alerts", severity="info")]
    assert listed == seeded  # nothing else is info: the rule pack has no info rule
    tab.sign_in("/alerts")
    tab.go("#/alerts?severity=info&status=all")
    first = tab.page.evaluate(JS_LIST_ROWS, "alerts-list")
    assert [row[0] for row in first] == seeded[:100]
    shown = _show_all(tab, "alerts-list", "alerts-more")
    assert [alert_id for alert_id, _ in shown] == seeded
    assert tab.page.inner_text("#alerts-count") == f"{PAGING_ALERTS:,} shown."

    tab.go("#/alerts?status=all")
    shown = _show_all(tab, "alerts-list", "alerts-more")
    assert set(seeded) <= {alert_id for alert_id, _ in shown}
    order = ["critical", "high", "medium", "low", "info"]
    ranks = [order.index(severity) for _, severity in shown]
    assert ranks == sorted(ranks), "the list goes one severity after another"


def test_alerts_and_reports_show_content_or_a_clear_not_available(tab: Page, api: Api) -> None:
    tab.sign_in("/alerts")
    # Present or not yet built: either real figures or an explicit "not available" state.
    if api.status("/v1/alerts", api.token) == 200:
        open_alerts = api.all_items("/v1/alerts", status="open")
        shown = sum(
            count_of(tab.page, f'#severity-tiles [data-severity="{s}"]')
            for s in ("critical", "high", "medium", "low", "info")
        )
        assert abs(shown - len(open_alerts)) <= 3  # alerts open and resolve as the estate moves
    else:
        assert "not available" in tab.page.inner_text("#alerts-overview").lower()
    for report, path in (("snapshots", "/v1/reports/snapshots"), ("s3", "/v1/reports/s3-metrics")):
        tab.go(f"#/reports?report={report}")
        body = tab.page.inner_text(f"#report-{report}")
        if api.status(path, api.token) == 404:
            assert "not available" in body.lower()
        else:
            assert tab.page.locator(
                f"#report-{report} table, #report-{report} .state.empty"
            ).count()


def _report_models() -> tuple[str, str]:
    """A snapshot report and an S3 report as the report modules build them, as JSON."""

    from cloudinv.producers.reports.s3_metrics import (
        SIZE_COLUMNS,
        BucketMetricsRow,
        S3MetricsReport,
    )
    from cloudinv.producers.reports.snapshots import (
        SnapshotGroup,
        SnapshotReport,
        SnapshotRow,
        SnapshotTotal,
    )

    now = datetime(2026, 11, 2, 12, tzinfo=UTC)

    def row(service: Any, snapshot_id: str, gb: float, days: int, bucket: str) -> SnapshotRow:
        return SnapshotRow(
            account_id="111111111111",
            service=service,
            region="eu-west-1",
            snapshot_type="manual",
            snapshot_id=snapshot_id,
            source="vol-1" if service == "EBS" else "db-1",
            source_name="data",
            engine="" if service == "EBS" else "postgres",
            size_gb=gb,
            status="completed",
            created_at=now,
            age_days=days,
            age_bucket=bucket,
            encrypted=service == "RDS",
            description="",
            volume_type="gp3" if service == "EBS" else "",
            volume_iops=None,
            volume_throughput=None,
        )

    rows = [
        row("EBS", "snap-1", 8, 3, "0-7 days"),
        row("EBS", "snap-2", 8, 40, "31-90 days"),
        row("RDS", "rds:db-1-2026", 20, 3, "0-7 days"),
    ]
    snapshots = SnapshotReport(
        generated_at=now,
        rows=rows,
        groups=[
            SnapshotGroup(
                service="EBS",
                account_id="111111111111",
                region="eu-west-1",
                source="vol-1",
                source_name="data",
                age_bucket="0-7 days",
                count=1,
                total_gb=8,
                types=["manual"],
                snapshot_ids=["snap-1"],
            )
        ],
        service_totals=[
            SnapshotTotal(service="EBS", count=2, total_gb=16),
            SnapshotTotal(service="RDS", count=1, total_gb=20),
        ],
        total=SnapshotTotal(service="all", count=3, total_gb=36),
        gaps=[],
    )
    sizes = dict.fromkeys(SIZE_COLUMNS, 0)
    s3 = S3MetricsReport(
        month="2026-10",
        period_start=datetime(2026, 10, 1, tzinfo=UTC),
        period_end=datetime(2026, 11, 1, tzinfo=UTC),
        generated_at=now,
        value_rule="last daily datapoint in the month",
        size_columns=list(SIZE_COLUMNS),
        rows=[
            BucketMetricsRow(
                bucket_name="logs",
                account_id="111111111111",
                region="eu-west-1",
                creation_date=now,
                total_objects=10,
                total_size=3 * 2**30,
                sizes={**sizes, "size_standard": 2**30, "size_glacier": 2 * 2**30},
            ),
            BucketMetricsRow(
                bucket_name="empty",
                account_id="111111111111",
                region="us-east-1",
                creation_date=now,
                total_objects=None,
                total_size=None,
                sizes=dict.fromkeys(SIZE_COLUMNS),
            ),
        ],
        gaps=[],
    )
    return snapshots.model_dump_json(), s3.model_dump_json()


def test_reports_render_the_report_models_with_charts_and_a_csv(tab: Page, api: Api) -> None:
    """The report endpoints are still being built: the page is given the report modules' own
    models (intercepted in the browser), and falls back to writing the CSV itself when the
    endpoint does not take ``format=csv``."""
    snapshots, s3 = _report_models()

    requested: list[str] = []

    def serve(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if "format=csv" in url:
            problem = {"status": 400, "title": "Bad Request", "detail": "unknown 'format'"}
            route.fulfill(status=400, content_type="application/json", body=json.dumps(problem))
        else:
            body = snapshots if "/v1/reports/snapshots" in url else s3
            route.fulfill(status=200, content_type="application/json", body=body)

    tab.page.route("**/v1/reports/**", serve)
    tab.sign_in("/reports?report=snapshots")
    assert tab.page.inner_text("#tile-snapshots .tile-value") == "3"
    ages = tab.page.locator("#age-bars li")
    assert [ages.nth(i).locator(".hbar-label").inner_text() for i in range(ages.count())] == [
        "0-7 days 28 GiB",  # an EBS and an RDS snapshot, 8 + 20 GiB
        "31-90 days 8 GiB",
    ]
    assert tab.page.locator("#age-bars svg rect.bar").count() == 2
    assert (
        tab.page.locator("#report-snapshots table.data >> nth=-1").locator("tbody tr").count() == 3
    )
    with tab.page.expect_download() as download:
        tab.page.click("#snapshots-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("service,region,snapshot_type,snapshot_id,source,source_name")
    assert len(lines) == 4 and "snap-2" in lines[2]

    tab.go("#/reports?report=s3")
    assert tab.page.inner_text("#tile-buckets .tile-value") == "2"
    # This month so far by default: a new estate has no complete month yet.
    this_month = f"month={datetime.now(UTC):%Y-%m}"
    assert any("/v1/reports/s3-metrics" in u and this_month in u for u in requested), requested
    biggest = tab.page.locator("#bucket-bars li").first.locator(".hbar-label").inner_text()
    assert biggest.startswith("logs")
    assert tab.page.locator("#class-bars li").count() == 2  # standard and glacier hold bytes
    with tab.page.expect_download() as download:
        tab.page.click("#s3-csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith(
        "bucket_name,account_id,region,creation_date,total_objects,total_size"
    )
    assert lines[1].startswith("logs,111111111111,eu-west-1")


def _short(label: str) -> str:
    """What the page calls a principal: the user or role session at the end of its ARN."""
    if not label.startswith("arn:"):
        return label
    resource = label.split(":", 5)[5]
    parts = resource.split("/")
    return "/".join(parts[1:]) if len(parts) > 1 else resource


def _hours_ago(hours: float) -> str:
    moment = time.time() - hours * 3600
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def test_the_slider_start_is_rounded_up_to_the_millisecond(tab: Page, api: Api) -> None:
    """The slider starts at the first change's capture time (µs), rounded up to the ms and
    sent to the API with its ms: a first resource that lived less than a second still shows
    there. The page's own format module, run in the browser, on the API's own time."""
    tab.sign_in("/inventory")
    first = api.get("/v1/changes", limit=1)["items"][0]["captured_at"]
    got = tab.page.evaluate(
        """async (first) => {
          const { ceilMs, isoExact, iso } = await import('/ui/js/format.js');
          return {
            exact: isoExact(ceilMs('2026-11-01T12:00:00.123001Z')),
            whole: isoExact(ceilMs('2026-11-01T12:00:00.123000+00:00')),
            second: isoExact(ceilMs('2026-11-01T12:00:05Z')),
            coarse: iso(ceilMs('2026-11-01T12:00:00.999999Z')),
            first: isoExact(ceilMs(first)),
          };
        }""",
        first,
    )
    assert got["exact"] == "2026-11-01T12:00:00.124Z"
    assert got["whole"] == "2026-11-01T12:00:00.123Z"
    assert got["second"] == "2026-11-01T12:00:05Z"
    assert got["coarse"] == "2026-11-01T12:00:01Z"
    # The start the UI would send holds the first change's resource (or what followed it).
    assert api.all_items("/v1/resources", at=got["first"])

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    assert moment(first) <= moment(got["first"]) < moment(first) + timedelta(milliseconds=1)


def test_the_diff_matches_list_items_by_identity_not_position(tab: Page) -> None:
    """Removing the first of two rules is one removed rule, even when the other rule's own
    lists came back in another order; items that name themselves (GroupId, Key) pair by
    name. The page's own diff module, run in the browser."""
    tab.sign_in("/inventory")
    rows = tab.page.evaluate(
        """async () => {
          const { diffRows } = await import('/ui/js/diff.js');
          const ssh = { FromPort: 22, ToPort: 22, IpProtocol: 'tcp',
                        IpRanges: [{ CidrIp: '0.0.0.0/0' }, { CidrIp: '10.0.0.0/8' }] };
          const https = { FromPort: 443, ToPort: 443, IpProtocol: 'tcp',
                          IpRanges: [{ CidrIp: '10.0.0.0/8' }, { CidrIp: '192.168.0.0/16' }] };
          const httpsReordered = { ...https, IpRanges: [...https.IpRanges].reverse() };
          const rules = diffRows({ IpPermissions: [ssh, https] },
                                 { IpPermissions: [httpsReordered] });
          const tags = diffRows({ Tags: [{ Key: 'a', Value: '1' }, { Key: 'b', Value: '2' }] },
                                { Tags: [{ Key: 'b', Value: '3' }] });
          const pick = (rs) => rs.filter((r) => r.status !== 'same')
            .map((r) => [r.status, r.path, r.left ?? null, r.right ?? null]);
          return { rules: pick(rules), tags: pick(tags) };
        }"""
    )
    # The SSH rule's leaves are removed; nothing of the HTTPS rule shows as changed.
    assert rows["rules"] and all(r[0] == "removed" for r in rows["rules"]), rows["rules"]
    assert all(r[1].startswith("/IpPermissions/0") for r in rows["rules"]), rows["rules"]
    assert 22 in {r[2] for r in rows["rules"]} and 443 not in {r[2] for r in rows["rules"]}
    # Tag b changed its value (paired by Key); tag a was removed.
    assert ["changed", "/Tags/0/Value", "2", "3"] in rows["tags"], rows["tags"]
    assert {tuple(r[:2]) for r in rows["tags"] if r[0] == "removed"} == {
        ("removed", "/Tags/0/Key"),
        ("removed", "/Tags/0/Value"),
    }


JS_PATHS_SEEN = """() => [...document.querySelectorAll('#drift td.paths-cell code')]
  .filter((el) => el.getClientRects().length)
  .map((el) => {
    const box = el.getBoundingClientRect();
    const frame = el.closest('.table-wrap').getBoundingClientRect();
    return { text: el.textContent, title: el.title,
             inside: box.left >= frame.left - 1 && box.right <= frame.right + 1 };
  })"""
JS_TABLE_SCROLLS = """() => { const w = document.querySelector('#drift .table-wrap');
  return w.scrollWidth - w.clientWidth; }"""


def _leaf_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """The JSON Pointer of every leaf of a configuration."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaf_paths(v, f"{prefix}/{str(k).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaf_paths(v, f"{prefix}/{i}")
    else:
        yield prefix


PIN = [sys.executable, "-m", "cloudinv", "baseline", "pin"]


@pytest.mark.timeout(600)
def test_drift_paths_are_readable_whole_at_both_sizes(browser: Any, api: Api) -> None:
    """A baseline of the security groups is pinned beside the running demo (as a user would)
    and the estate drifts from it. Every changed path in the drift table is shown whole,
    wrapped within the table with the full path as its title, on a laptop and on a phone.

    The demo's drift has short paths (it toggles top-level settings), so the browser is
    given the real drift answer with one drifted resource's paths lengthened to the deepest
    leaves of its own stored configuration (and more than fit before "N more")."""
    pinned = subprocess.run(
        [*PIN, "--data-dir", str(api.data_dir), "--type", "AWS::EC2::SecurityGroup"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pinned.returncode == 0, pinned.stderr

    def drifted() -> dict[str, Any] | None:
        items = api.all_items("/v1/drift")
        modified = (d for d in items if d["drift"] == "modified" and d.get("changed_paths"))
        return next(modified, None)

    item = api.wait_for("drift with changed paths", drifted, timeout=120)
    stored = api.get(f"/v1/resources/{urllib.parse.quote(item['key'], safe='')}")
    deepest = sorted(_leaf_paths(stored["configuration"]), key=len, reverse=True)[:8]
    assert len(deepest[0]) >= 40, deepest

    def serve(route: Any) -> None:
        answer = route.fetch().json()
        for d in answer["items"]:
            if d["key"] == item["key"]:
                d["changed_paths"] = list(dict.fromkeys([*d["changed_paths"], *deepest]))
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    for width, height in ((1280, 800), (420, 900)):
        tab = Page(browser, api, width=width, height=height)
        try:
            tab.page.route("**/v1/drift?*", serve)
            tab.sign_in("/alerts")
            # The real drift answer is fetched and widened first: slow on a loaded machine.
            tab.page.wait_for_selector("#drift td.paths-cell code.path", timeout=180_000)
            more = tab.page.locator("#drift details.more-paths > summary")
            assert more.count() >= 1  # the lengthened resource has more than four
            for summary in more.all():
                summary.click()
            seen = tab.page.evaluate(JS_PATHS_SEEN)
            assert {p["text"] for p in seen} >= set(deepest), "a path is not shown"
            for path in seen:
                assert path["text"] == path["title"], path  # whole, and whole on hover
                assert path["inside"], (width, path)  # not clipped by the table's frame
            assert tab.page.evaluate(JS_TABLE_SCROLLS) <= 1, width  # nothing hidden sideways
            page_width = tab.page.evaluate("() => document.documentElement.scrollWidth")
            assert page_width <= width, (width, page_width)
            assert tab.errors == []
        finally:
            tab.close()


# -- relationships ----------------------------------------------------------------------------

JS_RELATED = """() => [...document.querySelectorAll('#related-list .related-group')].map((g) => ({
  direction: g.dataset.direction, relationship: g.dataset.relationship,
  links: [...g.querySelectorAll('a.related-link')]
    .map((a) => [a.dataset.key, a.getAttribute('href')]),
  missing: g.querySelectorAll('.related-missing').length }))"""


def _related_instance(api: Api) -> tuple[str, dict[str, Any]]:
    """An instance of the demo whose subnet, VPC, security group and volume are stored."""

    def probe() -> tuple[str, dict[str, Any]] | None:
        for instance in api.get("/v1/resources", type="AWS::EC2::Instance", limit=50)["items"]:
            key = urllib.parse.quote(instance["key"], safe="")
            related = api.get(f"/v1/resources/{key}/related")
            types = {r["type"] for r in related["related"] if r["exists"]}
            wanted = {"AWS::EC2::Subnet", "AWS::EC2::VPC", "AWS::EC2::SecurityGroup"}
            if wanted <= types:
                return instance["key"], related
        return None

    found: tuple[str, dict[str, Any]] = api.wait_for("an instance with its network", probe)
    return found


def test_an_instances_relationships_panel_lists_and_draws_them(tab: Page, api: Api) -> None:
    key, _ = _related_instance(api)
    quoted = urllib.parse.quote(key, safe="")
    tab.sign_in("/inventory")

    def drawn_while_still() -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
        # The demo's estate moves every few seconds: compare the page with the API's answer
        # from just before and just after it was drawn, when both are the same.
        related = api.get(f"/v1/resources/{quoted}/related")
        graph = api.get(f"/v1/resources/{quoted}/graph", hops=1, limit=40)
        tab.go(f"#/resource/{quoted}?tab=related")
        groups = tab.page.evaluate(JS_RELATED)
        still = related == api.get(f"/v1/resources/{quoted}/related") and graph == api.get(
            f"/v1/resources/{quoted}/graph", hops=1, limit=40
        )
        return (groups, related, graph) if still else None

    groups, related, graph = api.wait_for(
        "the relationships still while the page was drawn", drawn_while_still
    )
    # The list is the API's answer, grouped by direction and relationship, each a link.
    shown = {(g["direction"], g["relationship"], k) for g in groups for k, _ in g["links"]}
    existing = [r for r in related["related"] if r["exists"]]
    assert shown == {(r["direction"], r["relationship"], r["key"]) for r in existing}, shown
    missing = sum(g["missing"] for g in groups)
    assert missing == len(related["related"]) - len(existing)  # named, but not inventoried
    types = {r["type"] for r in related["related"] if r["exists"]}
    assert {"AWS::EC2::Subnet", "AWS::EC2::VPC", "AWS::EC2::SecurityGroup"} <= types
    group = next(r for r in related["related"] if r["type"] == "AWS::EC2::SecurityGroup")
    link = tab.page.locator(f'#related-list a.related-link[data-key="{group["key"]}"]')
    assert link.get_attribute("href") == (
        f"#/resource/{urllib.parse.quote(group['key'], safe='')}?tab=related"
    )
    # The graph: the instance and its neighbours as nodes, the edges between them.
    assert tab.page.locator("#related-graph svg .graph-item").count() == len(graph["nodes"])
    assert tab.page.locator("#related-graph svg line.graph-edge").count() == len(graph["edges"])
    # Two hops reach further (the security group's other instances, the subnet's...).
    tab.click_and_wait("#hops-2")
    assert tab.hash_params()["hops"] == "2"
    two = api.get(f"/v1/resources/{quoted}/graph", hops=2, limit=40)
    assert tab.page.locator("#related-graph svg .graph-item").count() == len(two["nodes"])
    assert len(two["nodes"]) > len(graph["nodes"])
    # A related resource's link opens its page on the same panel.
    tab.click_and_wait(f'#related-list a.related-link[data-key="{group["key"]}"]')
    assert tab.page.locator(f'#related-list a.related-link[data-key="{key}"]').count() == 1


def test_the_relationships_panel_follows_the_time_shown(tab: Page, api: Api) -> None:
    key, _ = _related_instance(api)
    quoted = urllib.parse.quote(key, safe="")
    history = api.get(f"/v1/resources/{quoted}/history")["items"]
    born = min(_parse_time(e["captured_at"]) for e in history)
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(born - 1))
    # A past time (whole seconds: the page reads times to the millisecond) when its network
    # was there: a second ago.
    then = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    tab.sign_in("/inventory")
    # Before the instance existed: nothing was related to it.
    tab.go(f"#/resource/{quoted}?tab=related&at={urllib.parse.quote(before)}")
    assert tab.page.locator("#related-list").count() == 0
    assert "no relationship at that time" in tab.page.inner_text("#panel-related")
    # Later: what the API answers for that time, links keeping the time.
    tab.go(f"#/resource/{quoted}?tab=related&at={urllib.parse.quote(then)}")
    at = tab.hash_params()["at"]
    answer = api.get(f"/v1/resources/{quoted}/related", at=at)["related"]
    groups = tab.page.evaluate(JS_RELATED)
    shown = {k: href for g in groups for k, href in g["links"]}
    assert set(shown) == {r["key"] for r in answer if r["exists"]} != set()
    for href in shown.values():  # each link opens its resource at the same time
        linked = dict(urllib.parse.parse_qsl(href.partition("?")[2]))
        assert abs(_parse_time(linked["at"]) - _parse_time(at)) < 0.001, (href, at)
        assert linked["tab"] == "related"
    assert "as of" in tab.page.inner_text("#related-heading")
    # Now: back to the present.
    tab.click_and_wait("#related-now")
    assert "at" not in tab.hash_params()


def test_a_rule_on_relationships_fires_in_the_demo(api: Api) -> None:
    """The demo's first change opens SSH to the world on a group running instances use: the
    rule rated by what uses the group is open and critical, naming the instance why."""

    def critical() -> dict[str, Any] | None:
        alerts = api.all_items("/v1/alerts", rule="ec2-sg-ssh-open-to-world-in-use", status="open")
        return next((a for a in alerts if a["severity"] == "critical"), None)

    alert = api.wait_for("a critical relationship alert", critical, timeout=180)
    because = alert["detail"]["severity_because"]
    assert because["severity"] == "critical" and because["related"]
    instance = api.get(
        f"/v1/resources/{urllib.parse.quote(because['related'][0], safe='')}",
        at=alert["last_seen_at"],
    )
    assert instance["resource_type"] == "AWS::EC2::Instance"
    # As of the last observation that held (the demo may have closed the port since, and the
    # alert resolves when the worker sees that).
    group = api.get(
        f"/v1/resources/{urllib.parse.quote(alert['key'], safe='')}", at=alert["last_seen_at"]
    )
    ranges = [r["CidrIp"] for p in group["configuration"]["IpPermissions"] for r in p["IpRanges"]]
    assert "0.0.0.0/0" in ranges
