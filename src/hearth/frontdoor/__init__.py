"""Hearth's front door: one OpenAI-compatible endpoint, API keys, routing by model, metrics.

It runs in its own image (``templates/images/frontdoor``: Debian, Python, Starlette, httpx,
uvicorn, prometheus_client), as a container the ``front_door`` role starts on the front door
hosts. :mod:`hearth.frontdoor.config` is plain data (no web framework);
:mod:`hearth.frontdoor.app` is the ASGI application.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from hearth.frontdoor.__main__ import run

    return run(argv)
