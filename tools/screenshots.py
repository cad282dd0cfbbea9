"""Screenshots of every page of the web UI, for review: ``make screenshots``.

Starts ``cloudinv demo`` (or, with ``--connect DATA_DIR``, uses one already running), waits
until it has resources, changes and CloudTrail activity, then opens each page in headless
Chromium (Debian's ``chromium`` package, driven by Playwright) at 1280x800 and 420x900 and
writes PNGs to ``screenshots/``. It prints how long each page took to show its content and
fails if a page logged a JavaScript error. The demo it started is stopped at the end.

    python tools/screenshots.py [--out screenshots] [--connect .cloudinv]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CLOUDINV_CHROMIUM", "/usr/bin/chromium")
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
# Without the background-networking flags Chromium tries to reach Google's services, and on a
# machine with no internet access those connections fail loudly; the UI needs none of them.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"wide": (1280, 800), "narrow": (420, 900)}
MAX_HEIGHT = 2400
"""Long pages are cut here: enough to review, small enough to look at."""


def api_get(base: str, token: str, path: str, **params: Any) -> Any:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    request = urllib.request.Request(f"{base}{path}{'?' + query if query else ''}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def running_demo(data_dir: Path | None) -> Iterator[dict[str, Any]]:
    """The connection info of a demo: a running one (data_dir given) or a new one."""
    if data_dir is not None:
        yield json.loads((data_dir / "demo.json").read_text())
        return
    work = Path(tempfile.mkdtemp(prefix="cloudinv-shots-"))
    data = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDINV_")}
    env["PYTHONUNBUFFERED"] = "1"
    stderr = (work / "demo.stderr").open("w")
    proc = subprocess.Popen(
        [*DEMO_COMMAND, "--data-dir", str(data)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        deadline = time.monotonic() + 90
        while not (data / "demo.json").exists():
            if proc.poll() is not None:
                raise SystemExit(f"the demo exited with {proc.returncode}:\n{_tail(stderr.name)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the demo did not start in 90 s:\n{_tail(stderr.name)}")
            time.sleep(0.2)
        yield json.loads((data / "demo.json").read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()
        shutil.rmtree(work, ignore_errors=True)


def _tail(path: str, lines: int = 30) -> str:
    return "\n".join(Path(path).read_text().splitlines()[-lines:])


def wait_for_data(base: str, token: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until the demo has resources, a modified resource and CloudTrail principals (and
    pick an instance for the relationships page)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resources = api_get(base, token, "/v1/resources", limit=1)["items"]
            modified = api_get(base, token, "/v1/changes", change_type="modified", limit=50)
            principals = api_get(base, token, "/v1/principals", limit=5)["items"]
        except (urllib.error.URLError, OSError):
            resources, modified, principals = [], {"items": []}, []
        if resources and modified["items"] and principals:
            # A resource changed by the demo's estate (a security group or an instance),
            # so that its history and diff have something to show.
            preferred = [
                c
                for c in modified["items"]
                if c["resource_type"] in ("AWS::EC2::SecurityGroup", "AWS::EC2::Instance")
            ]
            attributed = [c for c in preferred if c.get("attribution")]
            change = (attributed or preferred or modified["items"])[-1]
            instances = api_get(base, token, "/v1/resources", type="AWS::EC2::Instance", limit=1)
            instance = instances["items"][0]["key"] if instances["items"] else change["key"]
            return {"change": change, "principal": principals[0]["label"], "instance": instance}
        if time.monotonic() > deadline:
            raise SystemExit("the demo has no resources, changes and CloudTrail events yet")
        time.sleep(1)


def pages(sample: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(file name, hash route, selector that shows the page has its content)."""
    change = sample["change"]
    key = urllib.parse.quote(change["key"], safe="")
    principal = urllib.parse.quote(sample["principal"], safe="")
    past = change["captured_at"]
    return [
        ("01-inventory", "#/inventory", "#resource-list table"),
        (
            "02-inventory-type",
            "#/inventory?type=" + urllib.parse.quote(change["resource_type"]),
            "#resource-list table",
        ),
        ("03-inventory-past", f"#/inventory?at={urllib.parse.quote(past)}", "#time-travel-banner"),
        ("04-resource-config", f"#/resource/{key}", ".tree"),
        ("05-resource-history", f"#/resource/{key}?tab=history", "#history-list"),
        (
            "06-resource-diff",
            f"#/resource/{key}?tab=diff&change={change['change_id']}",
            "table.diff",
        ),
        ("07-resource-events", f"#/resource/{key}?tab=events", "#panel-events > *:not(.state)"),
        # An instance's relationships: its subnet, VPC, security group, volumes; and two hops.
        (
            "07b-resource-relationships",
            f"#/resource/{urllib.parse.quote(sample['instance'], safe='')}?tab=related&hops=2",
            "#related-graph svg",
        ),
        ("08-feed", "#/feed", "#feed-list li"),
        ("09-activity", "#/activity?range=1h", "#services-chart svg"),
        ("10-principal", f"#/principal/{principal}?range=1h", "#activity-chart svg"),
        ("11-alerts", "#/alerts", "#alerts-overview h2"),
        ("12-reports-snapshots", "#/reports?report=snapshots", "#report-snapshots > *"),
        ("13-reports-s3", "#/reports?report=s3", "#report-s3 > *"),
    ]


def open_route(page: Any, route: str, ready: str, timeout: float = 15000) -> None:
    """Go to a hash route and wait until the page has drawn what it loaded."""
    before = page.evaluate(JS_RENDERS)
    page.evaluate(JS_GO, route)
    page.wait_for_function(JS_RENDERED_AFTER, arg=before, timeout=timeout)
    page.wait_for_selector(ready, timeout=timeout)


def shoot(info: dict[str, Any], out: Path) -> int:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    base, token = info["api_url"], info["api_token"]
    sample = wait_for_data(base, token)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    notes: list[str] = []
    timings: list[tuple[str, str, float]] = []

    def console_error(label: str, msg: Any) -> None:
        if msg.type != "error":
            return
        # Chromium logs every non-2xx fetch; a 404 is how a missing endpoint shows itself,
        # and the page shows it as "not available". Anything else is a fault of the page.
        if "Failed to load resource" in msg.text and "404" in msg.text:
            notes.append(f"{label}: {msg.text} ({msg.location.get('url', '')})")
        else:
            problems.append(f"{label}: console: {msg.text}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for label, (width, height) in VIEWPORTS.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                page.on("pageerror", lambda exc, lb=label: problems.append(f"{lb}: {exc}"))
                page.on("console", lambda msg, lb=label: console_error(lb, msg))
                page.goto(f"{base}/")
                page.wait_for_selector("#signin")
                page.screenshot(path=str(out / f"00-sign-in-{label}.png"))
                page.goto(f"{base}/#token={urllib.parse.quote(token)}")
                page.wait_for_selector("#resource-list", timeout=15000)
                for name, route, ready in pages(sample):
                    started = time.monotonic()
                    try:
                        open_route(page, route, ready)
                    except PlaywrightError as exc:
                        problems.append(f"{label} {name}: not ready: {exc}")
                    timings.append((label, name, time.monotonic() - started))
                    page.wait_for_timeout(200)  # charts settle on their measured width
                    full = page.evaluate("() => document.documentElement.scrollHeight")
                    page.screenshot(
                        path=str(out / f"{name}-{label}.png"),
                        full_page=True,
                        clip={"x": 0, "y": 0, "width": width, "height": min(full, MAX_HEIGHT)},
                    )
                page.close()
        finally:
            browser.close()
    print(f"{'viewport':8}  {'page':24}  seconds")
    for label, name, seconds in timings:
        print(f"{label:8}  {name:24}  {seconds:6.2f}")
    print(f"wrote {len(timings)} screenshots to {out}")
    for note in sorted(set(notes)):
        print("note:", note)
    for problem in problems:
        print("problem:", problem, file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots", help="where PNGs go")
    parser.add_argument(
        "--connect", type=Path, metavar="DATA_DIR", help="use the demo running on this data dir"
    )
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with running_demo(args.connect) as info:
        return shoot(info, args.out)


if __name__ == "__main__":
    sys.exit(main())
