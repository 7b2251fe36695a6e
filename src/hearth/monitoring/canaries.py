"""What the golden-question canary asks: each declared model, its endpoint and its question set
(the ``canary`` role writes it to ``/etc/hearth/canary.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hearth.monitoring.scrape import InventoryHost, engine_endpoints, target
from hearth.monitoring.settings import MonitoringError

__all__ = ["canary_targets", "question_set", "question_set_names"]


def _sets() -> dict[str, list[dict[str, Any]]]:
    from hearth import paths, yamlsrc

    loaded = yamlsrc.safe_load((paths.data_dir() / "golden_questions.yml").read_text())
    return {str(k): list(v) for k, v in loaded.items()}


def question_set_names() -> list[str]:
    return sorted(_sets())


def question_set(name: str) -> list[dict[str, Any]]:
    """One of Hearth's golden-question sets (``default``, ``lab``), from
    ``src/hearth/data/golden_questions.yml``."""
    sets = _sets()
    if name not in sets:
        raise MonitoringError(
            f"no golden-question set named {name!r} (Hearth has: {', '.join(sorted(sets))})"
        )
    return sets[name]


def canary_targets(
    hosts: Sequence[InventoryHost],
    *,
    frontdoor_url: str = "",
    question_sets: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    default_questions: Sequence[Mapping[str, Any]] = (),
    min_questions: int = 5,
) -> list[dict[str, Any]]:
    """What the canary asks: one entry per declared model (the first host serving a model
    answers for it, unless a front door is given), each with its question set."""
    problems: list[str] = []
    models: dict[str, dict[str, Any]] = {}
    for host in hosts:
        for endpoint in engine_endpoints(host):
            if endpoint.model in models:
                models[endpoint.model].setdefault("hosts", []).append(host.name)
                continue
            if endpoint.engine == "triton":
                url = ""  # Triton speaks KServe v2, not OpenAI: only through the front door
            else:
                url = f"http://{target(endpoint.address, endpoint.port)}/v1/chat/completions"
            pinned = ""
            if frontdoor_url:
                url = frontdoor_url.rstrip("/") + "/v1/chat/completions"
                pinned = _pinned_system_prompt(host, endpoint.model)
            models[endpoint.model] = {
                "model": endpoint.model,
                "version": endpoint.version,
                "engine": endpoint.engine,
                "url": url,
                "hosts": [host.name],
            }
            if pinned:
                models[endpoint.model]["pinned_system_prompt"] = pinned
    sets = question_sets or {}
    for name in sorted(set(sets) - set(models)):
        problems.append(f"canary_question_sets.{name}: no host declares a model named {name!r}")
    targets: list[dict[str, Any]] = []
    for name, entry in models.items():
        if not entry["url"]:
            continue
        questions = list(sets.get(name) or default_questions)
        if len(questions) < min_questions:
            problems.append(
                f"canary questions of {name}: {len(questions)} declared, at least "
                f"{min_questions} are needed"
            )
        if not any(q.get("kind") == "injection" for q in questions):
            problems.append(
                f"canary questions of {name}: no prompt-injection probe (kind: injection)"
            )
        entry["questions"] = questions
        targets.append(entry)
    if problems:
        raise MonitoringError("; ".join(problems))
    return targets


def _pinned_system_prompt(host: InventoryHost, model: str) -> str:
    """The system prompt the front door pins for ``model`` (``hearth_models[].system_prompt``):
    the canary then sends none of its own (a front door refuses a client's by default) and looks
    for leaks of that one."""
    for declared in host.models:
        if str(declared.get("name", "")) == model:
            pinned = declared.get("system_prompt")
            return pinned if isinstance(pinned, str) else ""
    return ""


# --------------------------------------------------------------------------------- grafana
