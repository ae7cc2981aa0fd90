"""The wallet's web pages: server-rendered (Jinja2), refreshed in parts (htmx), live by SSE."""

from wallet.entrypoints.web.pages import install_pages

__all__ = ["install_pages"]
