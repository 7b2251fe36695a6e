"""The front door's part of the prompt-injection guard: a model's pinned system prompt, and a
key's largest input.

A model declared with ``system_prompt`` (``hearth_models``) has it prepended to every chat
request as the first message; clients cannot replace it. A client's own ``system`` (or
``developer``) message is, by the model's ``system_prompt_policy``, either refused (``refuse``:
400 ``system_prompt_pinned``) or demoted (``demote``: sent as a ``user`` message, in its place,
after the pinned one). Raw completions (``/v1/completions``) of such a model are refused: a raw
prompt would bypass the pinned one.

A key with ``max_input_bytes`` may send request bodies of at most that many bytes, as received
(before the pinned prompt is added); a larger one is a 413 naming the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIENT_SYSTEM_ROLES", "Refused", "input_too_large", "pin_system_prompt"]

CLIENT_SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class Refused:
    status: int
    message: str
    code: str


def input_too_large(size: int, limit: int | None, key_name: str) -> Refused | None:
    """The 413 for a body of ``size`` bytes from a key whose ``max_input_bytes`` is ``limit``."""
    if limit is None or size <= limit:
        return None
    return Refused(
        413,
        f"the request is {size} bytes; the key {key_name!r} may send at most {limit} bytes "
        "(max_input_bytes)",
        "input_too_large",
    )


def pin_system_prompt(
    payload: Mapping[str, Any], model: str, pinned: str, policy: str
) -> dict[str, Any] | Refused:
    """``payload`` (a chat request) with ``pinned`` as its first message and every client system
    message refused or demoted by ``policy``; or the refusal to answer."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return Refused(400, "messages: expected a list of chat messages", "bad")
    kept: list[Any] = []
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role in CLIENT_SYSTEM_ROLES:
            if policy != "demote":
                return Refused(
                    400,
                    f"the model {model!r} pins its own system prompt: a client {role!r} message "
                    "is refused (system_prompt_policy: refuse); send instructions as a user "
                    "message",
                    "system_prompt_pinned",
                )
            message = {**message, "role": "user"}
        kept.append(message)
    return {**payload, "messages": [{"role": "system", "content": pinned}, *kept]}
