"""Pages /wallet, /portfolio, /savings, /allocations, /transactions and their parts.

Every figure comes from the same view models as the JSON API (CONTRACT.md, "Wallet read side"),
so a page shows exactly the API's strings. A page is the layout plus parts; each part is rendered
on its own (GET /parts/<name>), so one that cannot be loaded says so in its place while the rest
shows, and htmx re-fetches a part when the server-sent event stream says the wallet changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from shared.http import ApiError, TextCheckedRoute
from shared.http.auth import User, user_of_token
from shared.logging import get_logger
from wallet.application.ports import LedgerStore
from wallet.application.prices import PriceBook
from wallet.entrypoints.http import (
    BalancesView,
    TransactionsPage,
    balances_view,
    store_of,
    transactions_page,
)
from wallet.entrypoints.portfolio_api import load_portfolio, price_book_of

log = get_logger(__name__)

HERE: Final = Path(__file__).parent
TOKEN_COOKIE: Final = "access_token"  # noqa: S105 - the cookie's name, not a secret
HISTORY_PAGE: Final = 20
# How often an open page's event stream looks at the user's wallets: one indexed read of a
# handful of documents per open page, well inside the 2 s the contract allows for an update.
POLL_SECONDS: Final = 0.5
# Scripts and styles come from this origin only (vendored files, no inline code).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

CURRENCY_NAMES: Final = {
    "BTC": "Bitcoin",
    "ETH": "Ether",
    "USDT": "Tether",
    "USDC": "USD Coin",
    "LTC": "Litecoin",
    "TRX": "TRON",
    "SOL": "Solana",
    "GBP": "Pound sterling",
    "EUR": "Euro",
    "USD": "US dollar",
}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True
templates.env.globals["currency_names"] = CURRENCY_NAMES


@dataclass(frozen=True, slots=True)
class Caller:
    user: User | None
    problem: str | None = None  # why there is no user: no token, expired, invalid


def caller_of(request: Request) -> Caller:
    """The JWT from the Authorization header, else from the access_token cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else None
    token = token or request.cookies.get(TOKEN_COOKIE)
    if not token:
        return Caller(None, "Sign in to see your wallet.")
    try:
        return Caller(user_of_token(request, token))
    except ApiError as error:
        if error.message == "token expired":
            return Caller(None, "Your session has ended. Sign in again to see your wallet.")
        return Caller(None, "Sign in to see your wallet.")


# Parts -----------------------------------------------------------------------------------------

PartLoader = Callable[[Request, str, dict[str, str]], Awaitable[dict[str, Any]]]


async def _balances(request: Request, user_id: str, _: dict[str, str]) -> dict[str, Any]:
    view: BalancesView = balances_view(user_id, await store_of(request).wallets_of(user_id))
    return {"balances": view.model_dump(mode="json")["balances"]}


async def _portfolio(request: Request, user_id: str, _: dict[str, str]) -> dict[str, Any]:
    return {"portfolio": (await load_portfolio(request, user_id)).model_dump(mode="json")}


async def _transactions(request: Request, user_id: str, args: dict[str, str]) -> dict[str, Any]:
    cursor = args.get("cursor") or None
    page: TransactionsPage = await transactions_page(
        store_of(request), user_id, limit=HISTORY_PAGE, cursor=cursor
    )
    return {"page": page.model_dump(mode="json"), "cursor": cursor}


@dataclass(frozen=True, slots=True)
class Part:
    template: str
    load: PartLoader
    title: str  # what the in-place notice names when the part cannot be loaded
    events: str  # the server-sent events that make it refresh


PARTS: Final[dict[str, Part]] = {
    "balances": Part("parts/balances.html", _balances, "Balances", "wallet-changed"),
    "savings": Part("parts/savings.html", _balances, "Savings", "wallet-changed"),
    "portfolio": Part(
        "parts/portfolio.html", _portfolio, "Portfolio", "wallet-changed, prices-changed"
    ),
    "allocation": Part(
        "parts/allocation.html", _portfolio, "Allocation", "wallet-changed, prices-changed"
    ),
    "summary": Part(
        "parts/summary.html", _portfolio, "Estimated value", "wallet-changed, prices-changed"
    ),
    "transactions": Part(
        "parts/transactions.html", _transactions, "Transactions", "wallet-changed"
    ),
}


async def render_part(request: Request, name: str, user: User, args: dict[str, str]) -> str:
    """The part's HTML; if its data cannot be loaded, a notice in its place (never an error page)."""
    part = PARTS[name]
    context: dict[str, Any] = {"part": part, "name": name, "args": args}
    try:
        context |= await part.load(request, user.user_id, args)
        template = part.template
    except ApiError as error:  # a cursor this site did not make, for instance
        # The request is what is wrong: asking again would not help, nor echoing what it held.
        context |= {"notice": error.message, "args": {}, "retry": False}
        template = "parts/unavailable.html"
    except Exception:
        log.exception("page_part_failed", part=name)
        notice = f"{part.title} could not be loaded just now. Retrying shortly."
        context |= {"notice": notice, "retry": True}
        template = "parts/unavailable.html"
    return templates.get_template(template).render(context)


# Routes ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    title: str
    heading: str
    parts: tuple[str, ...]


PAGES: Final = (
    Page("/wallet", "Wallet", "Your wallet", ("summary", "balances")),
    Page("/portfolio", "Portfolio", "Portfolio", ("portfolio",)),
    Page("/savings", "Savings", "Savings", ("savings",)),
    Page("/allocations", "Allocations", "Allocation", ("allocation",)),
    Page("/transactions", "Transactions", "Transactions", ("transactions",)),
)

router = APIRouter(route_class=TextCheckedRoute, include_in_schema=False)


def _html(content: str, status_code: int = 200) -> HTMLResponse:
    response = HTMLResponse(content, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"  # figures of one user, never cached
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _page_route(page: Page) -> Callable[..., Awaitable[Response]]:
    async def show(request: Request, cursor: Annotated[str | None, Query()] = None) -> Response:
        caller = caller_of(request)
        context: dict[str, Any] = {"request": request, "page": page, "pages": PAGES}
        if caller.user is None:
            context["notice"] = caller.problem
            return _html(templates.get_template("signin.html").render(context))
        args = {"cursor": cursor} if cursor else {}
        parts = [await render_part(request, name, caller.user, args) for name in page.parts]
        context |= {"user": caller.user, "parts": parts}
        return _html(templates.get_template("page.html").render(context))

    show.__name__ = f"page_{page.title.lower()}"
    return show


for _page in PAGES:
    router.add_api_route(_page.path, _page_route(_page), methods=["GET"])


@router.get("/parts/{name}")
async def part(request: Request, name: str, cursor: str | None = None) -> Response:
    if name not in PARTS:
        return _html("<p class='notice'>No such part.</p>", status_code=404)
    caller = caller_of(request)
    if caller.user is None:
        notice = caller.problem or "Sign in to see your wallet."
        return _html(
            templates.get_template("parts/signed_out.html").render({"notice": notice}),
            status_code=401,
        )
    return _html(await render_part(request, name, caller.user, {"cursor": cursor or ""}))


async def _wallet_versions(store: LedgerStore, user_id: str) -> object | None:
    try:
        return tuple((w.currency, w.version) for w in await store.wallets_of(user_id))
    except Exception:
        log.warning("page_events_wallets_unreadable", exc_info=True)
        return None  # unknown this time: no event, the next poll tries again


def _prices_version(prices: PriceBook) -> object | None:
    try:
        return prices.snapshot()  # a new object per change
    except Exception:
        log.warning("page_events_prices_unreadable", exc_info=True)
        return None


@router.get("/events", response_class=EventSourceResponse)
async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
    """`wallet-changed` when the caller's wallets change, `prices-changed` when a price does."""
    caller = caller_of(request)
    if caller.user is None:
        yield ServerSentEvent(event="signed-out", data=caller.problem, retry=60_000)
        return
    store, prices = store_of(request), price_book_of(request)
    user_id = caller.user.user_id
    seen = {"wallet-changed": await _wallet_versions(store, user_id)}
    seen["prices-changed"] = _prices_version(prices)
    yield ServerSentEvent(event="ready", data="live", retry=2_000)
    while not await request.is_disconnected():
        await asyncio.sleep(POLL_SECONDS)
        now = {
            "wallet-changed": await _wallet_versions(store, user_id),
            "prices-changed": _prices_version(prices),
        }
        for event, version in now.items():
            if version is None:
                continue
            if version != seen[event]:
                yield ServerSentEvent(event=event, data="changed")
            seen[event] = version


@router.get("/")
async def home() -> Response:
    return Response(status_code=307, headers={"Location": "/wallet"})


def install_pages(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
