"""Prometheus's scrape configuration from the inventory: what each host runs and on which port.

Engine ports are decided by :mod:`hearth.engines` (the inference layer places its engines there);
this module only reads them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hearth import engines
from hearth.monitoring.settings import DURATION, MonitoringError

__all__ = [
    "ENGINE_JOBS",
    "EngineEndpoint",
    "InventoryHost",
    "engine_endpoints",
    "prometheus_config",
    "scrape_configs",
    "serves_dcgm",
    "target",
]

ENGINE_JOBS = {"vllm": "engine-vllm", "llamacpp": "engine-llamacpp", "triton": "engine-triton"}


@dataclass(frozen=True)
class InventoryHost:
    """What monitoring needs to know about one inventory host: inventory variables, and one fact.

    ``engine_ports`` is the host's ``inference_engine_ports`` (the inference layer's overrides;
    :func:`hearth.engines.host_ports` turns them into ports), ``dcgm_exporter_enabled`` the
    inventory's switch of the DCGM exporter, ``gpu_present`` the ``gpu_facts`` module's
    ``hearth_gpu_present`` (``None`` when the host's facts were never gathered) and
    ``declared_gpus`` the number of GPUs the inventory declares (``hearth_declared_gpus``).
    ``engine_bind_address`` is the host's ``inference_engine_bind_address``; ``frontdoor_port``
    and ``frontdoor_tls`` its front door's ``front_door_port`` and ``front_door_tls``.
    """

    name: str
    address: str
    groups: tuple[str, ...] = ()
    models: tuple[Mapping[str, Any], ...] = ()
    node_exporter_port: int | None = None
    dcgm_exporter_port: int | None = None
    dcgm_exporter_enabled: bool = True
    gpu_present: bool | None = None
    engine_ports: Mapping[str, int] = field(default_factory=dict)
    declared_gpus: int = 0
    engine_bind_address: str = "127.0.0.1"
    frontdoor_port: int | None = None
    frontdoor_tls: bool = True


def serves_dcgm(
    groups: Sequence[str],
    *,
    enabled: bool = True,
    gpu_present: bool | None = None,
    gpu_group: str = "gpu_nodes",
) -> bool:
    """Whether a host runs NVIDIA's DCGM exporter: it is in the GPU group, the inventory does not
    switch the exporter off (``dcgm_exporter_enabled``) and ``gpu_facts`` found an NVIDIA device
    (``hearth_gpu_present``; a host whose facts were never gathered counts as having the GPUs the
    group promises).

    The one decision, from inventory variables and a public fact only: the ``dcgm_exporter`` role
    installs the exporter where it is true (``hearth_dcgm_serving`` filter) and Prometheus scrapes
    the exporter where it is true, so the two agree whatever a fact cache still holds.
    """
    if gpu_group not in groups or enabled is False:
        return False
    return gpu_present is not False


@dataclass(frozen=True)
class EngineEndpoint:
    host: str
    address: str
    model: str
    version: str
    engine: str
    port: int  # the OpenAI-compatible (or Triton HTTP) port
    metrics_port: int

    @property
    def labels(self) -> dict[str, str]:
        return {
            "host": self.host,
            "hearth_model": self.model,
            "hearth_version": self.version,
            "hearth_engine": self.engine,
        }


@dataclass(frozen=True)
class _Declared:
    name: str
    engine: str


def engine_endpoints(host: InventoryHost) -> list[EngineEndpoint]:
    """The engines a host serves, one per declared model, on the ports
    :func:`hearth.engines.host_ports` gives them (the inference layer's one rule, with the host's
    ``inference_engine_ports``)."""
    declared = [
        (_Declared(str(m.get("name", "")), str(m.get("engine", ""))), m) for m in host.models
    ]
    declared = [(d, m) for d, m in declared if d.name and d.engine in ENGINE_JOBS]
    ports = engines.host_ports([d for d, _ in declared], host.engine_ports)
    return [
        EngineEndpoint(
            host=host.name,
            address=host.address,
            model=d.name,
            version=str(m.get("version", "")),
            engine=d.engine,
            port=ports[d.name],
            metrics_port=engines.metrics_port(d.engine, ports[d.name]),
        )
        for d, m in declared
    ]


ENGINE_METRICS_PATH = "/engine-metrics/"  # hearth.frontdoor.app: the relay of local engines
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def relayed(host: InventoryHost, frontdoor_group: str = "frontdoor") -> bool:
    """Whether Prometheus reaches the host's engines through its front door: the engines listen
    on loopback only and the host runs a front door, which relays each local engine's metrics
    to a scraper holding the scrape token (``GET /engine-metrics/<model>``)."""
    return (
        host.engine_bind_address in LOOPBACK
        and frontdoor_group in host.groups
        and bool(host.frontdoor_port)
    )


def target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def scrape_configs(
    hosts: Sequence[InventoryHost],
    *,
    node_exporter_port: int = 9100,
    dcgm_exporter_port: int = 9400,
    gpu_group: str = "gpu_nodes",
    monitoring_group: str = "monitoring",
    prometheus_port: int = 9090,
    prometheus_listen_address: str = "0.0.0.0",  # noqa: S104 - the role default, only compared
    alertmanager_port: int = 9093,
    frontdoor_group: str = "frontdoor",
    frontdoor_port: int | None = None,
    frontdoor_metrics_path: str = "/metrics",
    extra: Sequence[Mapping[str, Any]] = (),
    web_tls: bool = True,
    web_user: str = "hearth",
    scrape_token_file: str = "",
    frontdoor_ca_file: str = "",
) -> list[dict[str, Any]]:
    """Prometheus's ``scrape_configs`` for the inventory: node_exporter on every host, the DCGM
    exporter on GPU hosts, each declared model's engine, the front door, Prometheus and
    Alertmanager themselves. Each target's ``instance`` is its address; ``host`` is the inventory
    name (alerts and dashboards use it). With ``web_tls`` (``monitoring_tls``, on unless declared
    false), the jobs of :data:`~hearth.monitoring.webauth.TLS_JOBS` scrape over HTTPS with basic
    auth.

    Engines that listen on loopback only are scraped through their host's front door
    (:func:`relayed`): the target is the front door, the path ``/engine-metrics/<model>``, and
    the job presents the scrape token from ``scrape_token_file`` - never the engine's port.

    A front door with ``frontdoor_tls`` is scraped over HTTPS (its ``/metrics`` and the relay
    alike, ``__scheme__`` per target); with ``frontdoor_ca_file`` (the site's CA on the
    monitoring host) the jobs that reach one check its certificate against that CA
    (``tls_config.ca_file``; the certificate names the host's address, the target)."""
    from hearth.monitoring import webauth

    jobs: dict[str, list[dict[str, Any]]] = {}
    authorized: set[str] = set()
    https_doors: set[str] = set()  # jobs with a front door target over HTTPS

    def add(job: str, address: str, port: int, labels: Mapping[str, str]) -> None:
        jobs.setdefault(job, []).append(
            {"targets": [target(address, port)], "labels": dict(labels)}
        )

    for host in hosts:
        node_port = host.node_exporter_port or node_exporter_port
        add("node", host.address, node_port, {"host": host.name})
        if serves_dcgm(
            host.groups,
            enabled=host.dcgm_exporter_enabled,
            gpu_present=host.gpu_present,
            gpu_group=gpu_group,
        ):
            add(
                "dcgm",
                host.address,
                host.dcgm_exporter_port or dcgm_exporter_port,
                {"host": host.name},
            )
        for endpoint in engine_endpoints(host):
            job = ENGINE_JOBS[endpoint.engine]
            if relayed(host, frontdoor_group) and host.frontdoor_port:
                if not scrape_token_file:
                    raise MonitoringError(
                        f"{host.name}: its engines listen on loopback only "
                        f"(inference_engine_bind_address: {host.engine_bind_address}) and are "
                        "scraped through its front door, which needs the scrape token: set "
                        "hearth_scrape_token (in ansible-vault)"
                    )
                labels = dict(endpoint.labels)
                labels["__metrics_path__"] = ENGINE_METRICS_PATH + endpoint.model
                labels["__scheme__"] = "https" if host.frontdoor_tls else "http"
                add(job, host.address, host.frontdoor_port, labels)
                authorized.add(job)
                if host.frontdoor_tls:
                    https_doors.add(job)
            else:
                add(job, endpoint.address, endpoint.metrics_port, endpoint.labels)
        if frontdoor_port and frontdoor_group in host.groups:
            door = {"host": host.name}
            if host.frontdoor_tls:
                door["__scheme__"] = "https"
                https_doors.add("frontdoor")
            add("frontdoor", host.address, frontdoor_port, door)
        if monitoring_group in host.groups:
            # Prometheus on loopback only (admin API for backups) scrapes itself there.
            loopback = prometheus_listen_address in ("127.0.0.1", "::1", "localhost")
            own = prometheus_listen_address if loopback else host.address
            add("prometheus", own, prometheus_port, {"host": host.name})
            add("alertmanager", host.address, alertmanager_port, {"host": host.name})
    # Prometheus scraping itself on loopback: no certificate names 127.0.0.1, its host's name does
    monitors = [h.name for h in hosts if monitoring_group in h.groups]
    loopback = prometheus_listen_address in ("127.0.0.1", "::1", "localhost")
    own_name = monitors[0] if loopback and monitors else None
    configs: list[dict[str, Any]] = []
    order = ["prometheus", "alertmanager", "node", "dcgm", *ENGINE_JOBS.values(), "frontdoor"]
    for job in order:
        if job not in jobs:
            continue
        config: dict[str, Any] = {"job_name": job, "static_configs": jobs[job]}
        if job == "frontdoor":
            config["metrics_path"] = frontdoor_metrics_path
        if web_tls and job in webauth.TLS_JOBS:
            name = own_name if job == "prometheus" else None
            config.update(webauth.client_settings(web_user, name))
        if job in authorized:
            config["authorization"] = {"type": "Bearer", "credentials_file": scrape_token_file}
        if job in https_doors and frontdoor_ca_file:
            config["tls_config"] = {"ca_file": frontdoor_ca_file}
        configs.append(config)
    for item in extra:
        configs.append(copy.deepcopy(dict(item)))
    names = [c.get("job_name") for c in configs]
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise MonitoringError(
            f"prometheus_extra_scrape_configs: job_name {', '.join(map(str, duplicates))} is "
            "already used by Hearth's own scrape jobs; choose another name"
        )
    return configs


def prometheus_config(
    hosts: Sequence[InventoryHost],
    *,
    scrape_interval: str,
    evaluation_interval: str,
    rule_files: Sequence[str],
    external_labels: Mapping[str, str] | None = None,
    alertmanagers: Sequence[str] | None = None,
    **scrape_options: Any,
) -> dict[str, Any]:
    """``prometheus.yml`` as data. Alertmanager runs beside Prometheus on the monitoring hosts
    unless ``alertmanagers`` lists other addresses (host:port)."""
    if alertmanagers is None:
        group = scrape_options.get("monitoring_group", "monitoring")
        port = int(scrape_options.get("alertmanager_port", 9093))
        alertmanagers = [target(h.address, port) for h in hosts if group in h.groups]
    for key, value in (
        ("scrape_interval", scrape_interval),
        ("evaluation_interval", evaluation_interval),
    ):
        if not DURATION.match(str(value)):
            raise MonitoringError(f"prometheus_{key}: expected a duration (15s, 1m), got {value!r}")
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": scrape_configs(hosts, **scrape_options),
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if alertmanagers:
        targets = [{"targets": list(alertmanagers)}]
        entry: dict[str, Any] = {"static_configs": targets}
        if scrape_options.get("web_tls", True):
            from hearth.monitoring import webauth

            entry.update(webauth.client_settings(str(scrape_options.get("web_user", "hearth"))))
        config["alerting"] = {"alertmanagers": [entry]}
    return config


# ------------------------------------------------------------------------------ alertmanager
