"""The wallet pages in Debian's Chromium: no script errors, the API's figures, the chart's labels,
live updates without a reload, and nobody sees anyone else's wallet. Screenshots of every page at
phone and desktop widths go to build/screenshots/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from wallet.application.prices import Quote

from .conftest import PRICES_AS_OF, SCREENSHOTS, PageServer, deposit

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
PAGES = ["/wallet", "/portfolio", "/savings", "/allocations", "/transactions"]


class OpenPage:
    def __init__(self, page: Any, errors: list[str]) -> None:
        self.page = page
        self.errors = errors

    async def figure(self, selector: str) -> str:
        text: str = await self.page.locator(selector).first.inner_text()
        return text.strip()

    async def figures(self, selector: str) -> list[str]:
        texts: list[str] = await self.page.locator(selector).all_inner_texts()
        return [t.strip() for t in texts]


@asynccontextmanager
async def opened(
    browser: Any, server: PageServer, path: str, user: str | None, viewport: dict[str, int]
) -> AsyncIterator[OpenPage]:
    context = await browser.new_context(viewport=viewport, device_scale_factor=1)
    if user is not None:
        await context.add_cookies(
            [{"name": "access_token", "value": server.token(user), "url": server.base_url}]
        )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    try:
        await page.goto(server.base_url + path, wait_until="load")
        if user is not None:
            # The script ran and the event stream is open: the page is live.
            await page.locator("#live-status.on").wait_for(timeout=5_000)
        yield OpenPage(page, errors)
    finally:
        await context.close()


def _row(currency: str, field: str) -> str:
    return f"tr[data-currency='{currency}'] td[data-field='{field}'] .figure"


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_loads_without_script_errors_at_both_widths(
    browser: Any, server: PageServer, path: str
) -> None:
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        async with opened(browser, server, path, "alice", viewport) as open_page:
            await open_page.page.wait_for_timeout(300)  # the chart draws after load
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = path.strip("/")
            await open_page.page.screenshot(
                path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True
            )
            assert open_page.errors == []
            body = await open_page.page.locator("body").inner_text()
            assert "failed to load" not in body.lower()
            # Nothing wider than the screen: on a phone, wide tables scroll inside their card.
            overflow = await open_page.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a {label} screen"


async def test_wallet_page_shows_the_apis_balances_and_total(
    browser: Any, server: PageServer
) -> None:
    balances = (await server.api("/api/wallets/balances/alice", "alice"))["balances"]
    portfolio = await server.api("/api/wallets/portfolio/alice", "alice")
    async with opened(browser, server, "/wallet", "alice", DESKTOP) as open_page:
        assert await open_page.figures("table[data-testid='balances'] tbody tr th strong") == [
            b["currency"] for b in balances
        ]
        for b in balances:
            for field in ("available_balance", "locked_balance", "total_balance"):
                assert await open_page.figure(_row(b["currency"], field)) == b[field]
        assert (
            await open_page.figure("[data-testid='total-value'] .figure")
            == (portfolio["total_value"])
        )
        assert open_page.errors == []


async def test_portfolio_and_savings_pages_show_the_apis_figures(
    browser: Any, server: PageServer
) -> None:
    portfolio = await server.api("/api/wallets/portfolio/alice", "alice")
    async with opened(browser, server, "/portfolio", "alice", DESKTOP) as open_page:
        for asset in portfolio["assets"]:
            currency = asset["currency"]
            assert await open_page.figure(_row(currency, "holding")) == asset["holding"]
            if asset["price"] is None:
                cell = f"tr[data-currency='{currency}'] td[data-field='price']"
                assert await open_page.figure(cell) == "no price"
            else:
                for field in ("price", "value", "percentage"):
                    assert await open_page.figure(_row(currency, field)) == asset[field]
        assert portfolio["unpriced"] == ["EUR"]
        assert "EUR" in await open_page.figure("[data-testid='unpriced']")
    async with opened(browser, server, "/savings", "alice", DESKTOP) as open_page:
        assert await open_page.figure(_row("ETH", "savings_balance")) == "1"
        assert await open_page.figures("table[data-testid='savings'] tbody tr") != []


async def test_the_chart_has_the_allocations_labels_and_a_text_alternative(
    browser: Any, server: PageServer
) -> None:
    allocation = (await server.api("/api/wallets/portfolio/alice", "alice"))["allocation"]
    labels = [s["label"] for s in allocation]
    assert len(labels) == 6
    assert labels[-1] == "Others"
    async with opened(browser, server, "/allocations", "alice", DESKTOP) as open_page:
        chart = await open_page.page.evaluate(
            """() => {
                const chart = Chart.getChart(document.getElementById('allocation-chart'));
                return {type: chart.config.type, labels: chart.data.labels};
            }"""
        )
        assert chart == {"type": "doughnut", "labels": labels}
        aria = await open_page.page.get_attribute("#allocation-chart", "aria-label")
        assert aria is not None
        assert all(f"{s['label']} {s['percentage']}%" in aria for s in allocation)
        rows = open_page.page.locator("table[data-testid='allocation'] tbody tr")
        assert await rows.evaluate_all("rows => rows.map(r => r.dataset.label)") == labels
        for s in allocation:
            row = f"table[data-testid='allocation'] tr[data-label='{s['label']}']"
            assert await open_page.figure(f"{row} td[data-field='value'] .figure") == s["value"]
            assert (
                await open_page.figure(f"{row} td[data-field='percentage'] .figure")
                == (s["percentage"])
            )


async def test_transactions_page_shows_the_apis_history_with_paging(
    browser: Any, server: PageServer
) -> None:
    history = await server.api("/api/wallets/transactions/alice?limit=20", "alice")
    async with opened(browser, server, "/transactions", "alice", DESKTOP) as open_page:
        ids = await open_page.page.locator("tr[data-transaction-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.transactionId)"
        )
        assert ids == [item["transaction_id"] for item in history["items"]]
        assert await open_page.figures("td[data-field='amount'] .figure") == [
            item["amount"] for item in history["items"]
        ]
        assert await open_page.figures("td[data-field='balance_after'] .figure") == [
            item["balance_after"] for item in history["items"]
        ]
        assert await open_page.figures("span.direction") == [
            item["direction"].replace("_", " ") for item in history["items"]
        ]


async def test_a_balance_change_appears_on_the_open_page_within_two_seconds(
    browser: Any, server: PageServer
) -> None:
    async with opened(browser, server, "/wallet", "alice", PHONE) as open_page:
        before = await open_page.figure(_row("SOL", "available_balance"))
        await open_page.page.evaluate("window.sameDocument = 'yes'")
        started = time.monotonic()
        await server.ledger.handle_batch([deposit("alice", "SOL", "1.5", "alice-live-1")])
        expected = next(
            b["available_balance"]
            for b in (await server.api("/api/wallets/balances/alice", "alice"))["balances"]
            if b["currency"] == "SOL"
        )
        assert expected != before
        await open_page.page.wait_for_function(
            """([selector, expected]) => {
                const cell = document.querySelector(selector);
                return cell !== null && cell.textContent.trim() === expected;
            }""",
            arg=[_row("SOL", "available_balance"), expected],
            timeout=2_000,
        )
        elapsed = time.monotonic() - started
        assert await open_page.page.evaluate("window.sameDocument") == "yes"  # no reload
        assert elapsed < 2.0
        assert open_page.errors == []
        print(f"balance change committed and shown after {elapsed:.2f} s")


async def test_a_user_never_sees_another_users_data(browser: Any, server: PageServer) -> None:
    bob = (await server.api("/api/wallets/balances/bob", "bob"))["balances"]
    for path in PAGES:
        async with opened(browser, server, path + "?user_id=alice", "bob", DESKTOP) as open_page:
            assert await open_page.figure("[data-testid='user-id']") == "bob"
            text = await open_page.page.locator("main").inner_text()
            for alice_only in ("1200", "3.25", "ETH", "alice"):
                assert alice_only not in text, f"{path} shows {alice_only!r} to bob"
    async with opened(browser, server, "/wallet", "bob", DESKTOP) as open_page:
        shown = await open_page.figures("table[data-testid='balances'] tbody tr th strong")
        assert shown == [b["currency"] for b in bob]
        assert await open_page.figure(_row("BTC", "available_balance")) == "7.77777777"
        # A change to alice's wallet is no event on bob's page.
        await server.ledger.handle_batch([deposit("alice", "BTC", "0.01", "alice-live-2")])
        await open_page.page.wait_for_timeout(1_200)
        assert await open_page.figure(_row("BTC", "available_balance")) == "7.77777777"


async def test_without_a_token_a_page_asks_to_sign_in_and_shows_no_data(
    browser: Any, server: PageServer
) -> None:
    async with opened(browser, server, "/wallet", None, PHONE) as open_page:
        await open_page.page.screenshot(path=str(SCREENSHOTS / "signin-phone.png"))
        notice = await open_page.figure("[data-testid='signin-notice']")
        assert "Sign in" in notice
        assert await open_page.page.locator("table").count() == 0
        assert open_page.errors == []


async def test_a_part_that_cannot_load_says_so_in_place_and_the_rest_shows(
    browser: Any, server: PageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def prices_down() -> None:
        raise RuntimeError("prices unavailable")

    monkeypatch.setattr(server.runtime.prices, "snapshot", prices_down)
    async with opened(browser, server, "/wallet", "alice", DESKTOP) as open_page:
        await open_page.page.screenshot(path=str(SCREENSHOTS / "wallet-part-unavailable.png"))
        notice = await open_page.figure("#part-summary .notice")
        assert notice == "Estimated value could not be loaded just now. Retrying shortly."
        assert await open_page.page.locator("table[data-testid='balances'] tbody tr").count() > 0
        assert "failed to load" not in (await open_page.page.content()).lower()


async def test_a_price_change_revalues_the_open_allocation_page(
    browser: Any, server: PageServer
) -> None:
    async with opened(browser, server, "/allocations", "alice", DESKTOP) as open_page:
        btc = "table[data-testid='allocation'] tr[data-label='BTC'] td[data-field='value'] .figure"
        before = await open_page.figure(btc)
        server.runtime.prices.update(
            Quote("BTC", Decimal("60000"), PRICES_AS_OF + timedelta(minutes=1), "builtin")
        )
        allocation = (await server.api("/api/wallets/portfolio/alice", "alice"))["allocation"]
        expected = next(s["value"] for s in allocation if s["label"] == "BTC")
        assert expected != before
        await open_page.page.wait_for_function(
            """([selector, expected]) => {
                const cell = document.querySelector(selector);
                return cell !== null && cell.textContent.trim() === expected;
            }""",
            arg=[btc, expected],
            timeout=2_000,
        )
        charts = await open_page.page.evaluate(
            "() => Object.values(Chart.instances).map(c => c.data.labels.length)"
        )
        assert charts == [len(allocation)]  # the old chart was let go with its canvas
        assert open_page.errors == []


# Every animation frame while the page updates: whether the chart's canvas shows a drawn chart.
_WATCH_CHART_FRAMES = """() => {
    window.chartFrames = {frames: 0, blank: 0, swaps: 0, watching: true};
    document.addEventListener("htmx:afterSwap", () => { window.chartFrames.swaps += 1; });
    const painted = (canvas) => {
        if (!canvas || !Chart.getChart(canvas)) return false;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 3; i < pixels.length; i += 4 * 31) if (pixels[i] > 0) return true;
        return false;
    };
    const frame = () => {
        const seen = window.chartFrames;
        if (!seen.watching) return;
        seen.frames += 1;
        if (!painted(document.querySelector("canvas[data-chart='doughnut']"))) seen.blank += 1;
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
}"""


async def test_the_chart_does_not_blink_when_an_update_redraws_it(
    browser: Any, server: PageServer
) -> None:
    """A live update swaps the allocation part, canvas included: the new chart is drawn before
    the browser paints the new canvas, so no frame shows the chart's place empty."""
    async with opened(browser, server, "/allocations", "alice", DESKTOP) as open_page:
        page = open_page.page
        await page.wait_for_function("() => Object.keys(Chart.instances).length === 1")
        await page.evaluate(_WATCH_CHART_FRAMES)
        btc = "table[data-testid='allocation'] tr[data-label='BTC'] td[data-field='value'] .figure"
        for step, price in enumerate(("61000", "62000", "63000"), start=2):
            server.runtime.prices.update(
                Quote("BTC", Decimal(price), PRICES_AS_OF + timedelta(minutes=step), "builtin")
            )
            allocation = (await server.api("/api/wallets/portfolio/alice", "alice"))["allocation"]
            expected = next(s["value"] for s in allocation if s["label"] == "BTC")
            await page.wait_for_function(
                """([selector, expected]) => {
                    const cell = document.querySelector(selector);
                    return cell !== null && cell.textContent.trim() === expected;
                }""",
                arg=[btc, expected],
                timeout=2_000,
            )
            await page.wait_for_timeout(100)  # a few frames after the swap
        seen = await page.evaluate(
            "() => { window.chartFrames.watching = false; return window.chartFrames; }"
        )
        assert seen["swaps"] >= 3, seen
        assert seen["frames"] > 10, seen
        assert seen["blank"] == 0, seen
        assert open_page.errors == []


async def test_a_change_made_before_the_stream_connects_still_reaches_the_open_page(
    browser: Any, server: PageServer
) -> None:
    """The stream tells of changes after it opened. Before, a change that landed while the page
    was loading (or while the stream reconnected, after a wallet restart) was never shown."""
    context = await browser.new_context(viewport=PHONE, device_scale_factor=1)
    await context.add_cookies(
        [{"name": "access_token", "value": server.token("dora"), "url": server.base_url}]
    )
    page = await context.new_page()
    committed = asyncio.Event()

    async def change_before_connecting(route: Any) -> None:
        if not committed.is_set():  # the page is rendered; its stream is not open yet
            await server.ledger.handle_batch([deposit("dora", "SOL", "2.5", "dora-gap-1")])
            committed.set()
        await route.continue_()

    try:
        await server.ledger.handle_batch([deposit("dora", "SOL", "1", "dora-gap-0")])
        await page.route("**/events", change_before_connecting)
        await page.goto(server.base_url + "/wallet", wait_until="load")
        await page.locator("#live-status.on").wait_for(timeout=5_000)
        assert committed.is_set()
        await page.wait_for_function(
            """([selector, expected]) => {
                const cell = document.querySelector(selector);
                return cell !== null && cell.textContent.trim() === expected;
            }""",
            arg=[_row("SOL", "available_balance"), "3.5"],
            timeout=2_000,
        )
    finally:
        await context.close()
