"""Hearth: turn bare-metal GPU servers into private LLM inference hosts, and keep them healthy."""

from __future__ import annotations

__version__ = "0.1.0"
