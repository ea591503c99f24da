"""The dashboard in headless Chromium (Debian's), driven by Playwright.

    python dashboard.py demo   BASE TOKEN ARTIFACTS
    python dashboard.py escape BASE TOKEN ARTIFACTS ASSET ALARM_ID EVIL
    python dashboard.py timing BASE ARTIFACTS ASSET
    python dashboard.py report FILE ARTIFACTS

(`report` opens a `usan spc --report` page from disk with every network
request refused, as a handed-over file would be read.)

Each step saves a screenshot in ARTIFACTS. The last line printed is a JSON
object of what the Rust test checks against the API afterwards; any failed
expectation exits non-zero with Playwright's message.
"""

import datetime
import json
import os
import sys
import time
import zoneinfo

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("USAN_CHROMIUM", "/usr/bin/chromium")
ZONE = "Asia/Seoul"
expect.set_options(timeout=30_000)


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


def watch_errors(page, errors):
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
    page.on("response", lambda r: r.status >= 400 and errors.append(f"HTTP {r.status}: {r.url}"))


def shot(page, artifacts, name):
    page.screenshot(path=os.path.join(artifacts, f"{name}.png"), full_page=True)


def login(page, artifacts, token, name):
    page.goto(page.url.split("#")[0] + "#/login")
    page.get_by_label("API token").fill(token)
    shot(page, artifacts, f"{name}-login")
    page.get_by_test_id("login-submit").click()
    expect(page.locator("#who")).not_to_have_text("not logged in")


def demo(base, token, artifacts):
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id=ZONE, locale="en-GB")
        page = context.new_page()
        watch_errors(page, errors)

        # First the alarm list, opened while the engines still learn: an alarm
        # appears on it live, with no reload (the marker set now survives).
        page.goto(base + "/#/alarms")
        expect(page.locator("select[aria-label=State]")).to_be_visible()
        page.evaluate("window.__sameDocument = true")
        at_load = set(page.evaluate("[...document.querySelectorAll('[data-alarm]')].map(r => r.dataset.alarm)"))
        deadline = time.monotonic() + 90
        while True:
            now = page.evaluate("[...document.querySelectorAll('[data-alarm]')].map(r => r.dataset.alarm)")
            if set(now) - at_load:
                break
            assert time.monotonic() < deadline, "no alarm appeared on the open list"
            time.sleep(0.1)
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
        shot(page, artifacts, "01-alarm-appears-live")

        # The overview shows the demo's ten engines, on the plant tree.
        page.goto(base + "/#/")
        tiles = page.locator(".tile")
        expect(tiles).to_have_count(10)
        expect(page.locator('.tile[data-asset="engine-39"] .tile-id')).to_have_text("engine-39")
        expect(page.get_by_role("heading", name="Line: fd001")).to_be_visible()
        expect(page.locator("#footer")).to_contain_text(ZONE)
        shot(page, artifacts, "02-overview")

        # The language switch: Korean and back.
        page.get_by_test_id("language").click()
        expect(page.locator("#nav-overview")).to_have_text("공장")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.get_by_role("heading", name="라인: fd001")).to_be_visible()
        shot(page, artifacts, "03-overview-korean")
        page.get_by_test_id("language").click()
        expect(page.locator("#nav-overview")).to_have_text("Plant")

        # Log in, and take a raised alarm from the list.
        login(page, artifacts, token, "04")
        page.goto(base + "/#/alarms")
        raised = page.locator("[data-testid=alarm-table] tbody tr.state-raised").first
        expect(raised).to_be_visible()
        shot(page, artifacts, "05-alarm-list")
        alarm_id = int(raised.get_attribute("data-alarm"))

        # Acknowledge it in the page.
        raised.locator("td").first.get_by_role("link").click()
        expect(page.get_by_test_id("alarm-state")).to_have_text("raised")
        alarm = json.loads(page.evaluate(f"fetch('/api/v1/alarms/{alarm_id}').then(r => r.text())"))
        shown = datetime.datetime.fromtimestamp(alarm["raised_at"] / 1000, zoneinfo.ZoneInfo(ZONE))
        expect(page.locator("dd").first).to_have_text(shown.strftime("%d/%m/%Y, %H:%M:%S"))
        shot(page, artifacts, "06-alarm")
        page.locator("form[data-action=acknowledge] input[name=note]").fill("on my way (browser test)")
        page.get_by_test_id("alarm-acknowledge").click()
        expect(page.get_by_test_id("alarm-state")).to_have_text("acknowledged")
        expect(page.get_by_test_id("alarm-history")).to_contain_text("on my way (browser test)")
        shot(page, artifacts, "07-alarm-acknowledged")

        # Hand it on, then close it with its cause.
        page.locator("form[data-action=assign] input[name=to]").fill("lee")
        page.locator("form[data-action=assign] input[name=note]").fill("check the compressor")
        page.get_by_test_id("alarm-assign").click()
        expect(page.get_by_test_id("alarm-state")).to_have_text("assigned")
        expect(page.get_by_test_id("alarm-assigned")).to_have_text("lee")
        page.locator("form[data-action=clear] input[name=cause]").fill("HPC degradation, engine to overhaul")
        page.get_by_test_id("alarm-clear").click()
        expect(page.get_by_test_id("alarm-state")).to_have_text("cleared")
        expect(page.get_by_test_id("alarm-cause")).to_have_text("HPC degradation, engine to overhaul")
        shot(page, artifacts, "07b-alarm-closed")

        # The alarm's asset: live charts of 21 signals and the score, the
        # signals behind the latest score, and its findings, each explained.
        page.get_by_role("link", name=f"pca on {alarm['asset']}").click()
        expect(page.locator(".chart-cell")).to_have_count(21)
        expect(page.locator(".chart-wide canvas")).to_have_count(1)
        expect(page.get_by_test_id("asset-health")).not_to_be_empty()
        findings = page.locator("[data-testid=findings] tbody tr")
        expect(findings.first).to_be_visible()
        findings.last.click()
        expect(page.locator("tr.chosen")).to_have_count(1)
        expect(page.locator("[data-testid=finding-why] .bar-row").first).to_be_visible()
        shot(page, artifacts, "08-asset")
        missing = page.evaluate("import('/ui/i18n.js').then(m => m.missingKeys())")
        assert missing == [], f"words without Korean: {missing}"

        # The control chart of one signal.
        page.locator('.chart-cell[data-signal="T24"] a').click()
        expect(page.get_by_test_id("spc-i")).to_be_visible()
        expect(page.get_by_test_id("spc-mr")).to_be_visible()
        expect(page.get_by_text("No specification limits")).to_be_visible()
        shot(page, artifacts, "09-control-chart")
        browser.close()
    if errors:
        raise SystemExit("browser errors:\n" + "\n".join(errors))
    print(json.dumps({"worked": alarm_id}))


def escape(base, token, artifacts, asset, alarm_id, evil):
    errors = []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, timezone_id=ZONE).new_page()
        watch_errors(page, errors)
        # Reading needs a login here: the page asks for one.
        page.goto(base + "/")
        expect(page.get_by_test_id("login-submit")).to_be_visible()
        login(page, artifacts, token, "escape-01")
        tile = page.locator(".tile").first
        expect(tile.locator(".tile-id")).to_have_text(asset)
        shot(page, artifacts, "escape-02-overview")
        page.goto(base + "/#/alarms/" + str(alarm_id))
        expect(page.get_by_test_id("alarm-history")).to_contain_text(evil)
        shot(page, artifacts, "escape-03-alarm")
        page.goto(base + "/#/asset/" + asset.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20"))
        expect(page.locator("h1")).to_have_text(asset)
        # An operator declares maintenance on the asset, then ends it.
        page.locator("[data-testid=maintenance] input[name=note]").fill("<b>die change</b>")
        page.get_by_test_id("maintenance-declare").click()
        expect(page.get_by_test_id("maintenance")).to_contain_text("<b>die change</b>")
        shot(page, artifacts, "escape-04-asset")
        page.get_by_test_id("maintenance-end").click()
        expect(page.get_by_test_id("maintenance")).to_contain_text("No maintenance declared.")
        page.locator('.chart-cell[data-signal="force"] a').click()
        expect(page.get_by_test_id("capability")).to_contain_text("Cpk")
        shot(page, artifacts, "escape-05-control-chart")
        # Logging out of a plant that needs a login leads back to the login.
        page.locator("#login-button").click()
        expect(page.get_by_test_id("login-submit")).to_be_visible()
        expect(page.locator("#who")).to_have_text("not logged in")
        injected = page.evaluate(
            "({pwned: window.__pwned === 1, img: document.querySelectorAll('#view img').length,"
            " scripts: document.querySelectorAll('#view script').length, bold: document.querySelectorAll('#view b').length})"
        )
        browser.close()
    if errors:
        raise SystemExit("browser errors:\n" + "\n".join(errors))
    print(json.dumps(injected))


def wait_for_mark(page, name, limit_s=60):
    """The mark's time (ms since navigation) once the page has set it.

    Polls with evaluate: the page's Content Security Policy forbids the
    string evaluation wait_for_function would need."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        at = page.evaluate(f"performance.getEntriesByName({json.dumps(name)}).map(e => e.startTime).pop() ?? null")
        if at is not None:
            return at
        time.sleep(0.005)
    raise SystemExit(f"the page never set {name}")


def timing(base, artifacts, asset):
    """The overview's first paint and readiness, and the asset page's time to
    charts, in ms from the page's own clock, three times each from a cold load."""
    with sync_playwright() as p:
        browser = launch(p)
        results = {}
        for attempt in range(3):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(base + "/")
            ready = wait_for_mark(page, "usan:overview-ready")
            paint = page.evaluate(
                "({fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null,"
                " tiles: document.querySelectorAll('.tile').length})"
            )
            clicked = page.evaluate(f"(() => {{ const t = performance.now(); location.hash = '#/asset/{asset}'; return t; }})()")
            drawn = wait_for_mark(page, "usan:asset-ready")
            charts = page.evaluate("document.querySelectorAll('.chart-cell canvas').length")
            results[attempt] = {
                "overview_first_contentful_paint_ms": paint["fcp"],
                "overview_ready_ms": ready,
                "tiles": paint["tiles"],
                "asset_page_ms": drawn - clicked,
                "asset_charts": charts,
            }
            if attempt == 2:
                shot(page, artifacts, "timing-asset")
                page.goto(base + "/")
                wait_for_mark(page, "usan:overview-ready")
                shot(page, artifacts, "timing-overview")
            page.context.close()
        browser.close()
    print(json.dumps(results))


def report(path, artifacts):
    errors, requests = [], []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        watch_errors(page, errors)

        def refuse(route):
            if not route.request.url.startswith("file://"):
                requests.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        page.route("**/*", refuse)
        page.goto("file://" + os.path.abspath(path))
        page.wait_for_load_state("load")
        drawn = page.evaluate(
            """() => [...document.querySelectorAll('svg')].map(svg => {
                const box = svg.getBoundingClientRect();
                return {width: box.width, height: box.height, marks: svg.querySelectorAll('polyline,path,rect,line,circle').length};
            })"""
        )
        shot(page, artifacts, "spc-report")
        title = page.title()
        browser.close()
    print(json.dumps({"errors": errors, "requests": requests, "svgs": drawn, "title": title}))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    os.makedirs(args[1] if mode in ("timing", "report") else args[2], exist_ok=True)
    if mode == "demo":
        demo(*args)
    elif mode == "escape":
        escape(args[0], args[1], args[2], args[3], int(args[4]), args[5])
    elif mode == "timing":
        timing(*args)
    elif mode == "report":
        report(*args)
    else:
        raise SystemExit(f"unknown mode {mode}")
