"""What a token costs on the site's own hosts, and how much hardware is just enough.

Pure arithmetic over the inventory's ``hearth_costs`` / ``hearth_cloud_prices`` and the data files
(``cloud_prices.yml``, ``gpu_catalog.yml``); ``hearth plan --cost`` and ``hearth plan --size`` are
thin layers over it (docs/capacity.md). A month is 730 hours (8,760 / 12).

Cost of a host per month::

    capital = purchase_price / amortisation_months      (or monthly_rent)
    power   = power_watts / 1000 × 730 h × price_per_kwh (the host is on all month, at load)
    total   = capital + power + monthly_ops

Cost per million output tokens at a throughput of ``r`` tokens/s for a share ``u`` of the month::

    total / (r × u × 730 × 3600 / 1e6)

Break-even with a cloud price ``p`` per million: ``total / p`` million tokens a month; the host
reaches it at utilisation ``(total / p) / (r × 730 × 3600 / 1e6)`` (above 1: never).

Sizing (:func:`size`) works at the roofline (:mod:`hearth.plan`'s arithmetic): one decode step of
a batch of ``b`` sequences reads the weights once and every sequence's KV cache, so it takes
``(weights + b × KV bytes per token × average context) / bandwidth`` per GPU; ``b`` sequences
then produce ``b / step`` tokens/s. The first token costs the prompt's prefill
(``2 × active parameters × prompt tokens`` FLOPs at :data:`PREFILL_EFFICIENCY` of the GPUs' dense
FP16 throughput) plus one step. Everything from sizing is an estimate until ``hearth bench``
measures it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import yaml

from hearth import paths
from hearth.errors import InvalidInputError

__all__ = [
    "DEFAULT_SLO",
    "HOURS_PER_MONTH",
    "SECONDS_PER_MONTH",
    "CloudPrice",
    "Costs",
    "GpuModel",
    "MonthlyCost",
    "SizingOption",
    "Slo",
    "break_even",
    "cost_per_million",
    "default_cloud_prices",
    "gpu_catalog",
    "monthly_cost",
    "parse_cloud_prices",
    "parse_costs",
    "parse_slo",
    "roofline_capacity",
    "size",
]

HOURS_PER_MONTH = 730.0
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
PREFILL_EFFICIENCY = 0.5  # share of dense FP16 TFLOPS a prefill reaches (MFU), an estimate
QUANTIZATIONS = {"int4": "int4", "int8": "int8", "fp16": None}
TP_SIZES = (1, 2, 4, 8)
MAX_REPLICAS = 16


class CostInputError(InvalidInputError):
    """A cost, price or SLO value that cannot be used; names the key (exit 2)."""


# ------------------------------------------------------------------------------------- SLO


@dataclass(frozen=True)
class Slo:
    """The latency target: p95 time to first token (s) and p95 inter-token latency (ms)."""

    ttft_p95_s: float = 2.0
    itl_p95_ms: float = 100.0


DEFAULT_SLO = Slo()
_SLO_BOUNDS = {"ttft_p95_s": (0.0, 600.0, "seconds"), "itl_p95_ms": (1.0, 60000.0, "milliseconds")}


def parse_slo(raw: object, where: str = "hearth_slo") -> Slo:
    """An :class:`Slo` from a mapping (the inventory's ``hearth_slo``) or ``key=value,…`` text
    (``--slo``); unset keys take :data:`DEFAULT_SLO`'s. Raises naming the key."""
    if raw is None:
        return DEFAULT_SLO
    items: dict[str, object]
    if isinstance(raw, str):
        items = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, text = part.partition("=")
            if not sep:
                raise CostInputError(f"{where}: {part!r}: expected KEY=VALUE (ttft_p95_s=2)")
            items[name.strip()] = text.strip()
    elif isinstance(raw, Mapping):
        items = {str(k): v for k, v in raw.items()}
    else:
        raise CostInputError(f"{where}: expected a mapping {{ttft_p95_s, itl_p95_ms}}")
    values: dict[str, float] = asdict(DEFAULT_SLO)
    for key, value in items.items():
        if key not in _SLO_BOUNDS:
            hint = ""
            if key.startswith("ttft"):
                hint = " (the time to first token is ttft_p95_s, in seconds)"
            elif key.startswith("itl"):
                hint = " (the inter-token latency is itl_p95_ms, in milliseconds)"
            raise CostInputError(
                f"{where}.{key}: unknown key{hint}; known: {', '.join(_SLO_BOUNDS)}"
            )
        low, high, unit = _SLO_BOUNDS[key]
        number = _number(value, f"{where}.{key}", f"a number of {unit}")
        above_low = number > low if key == "ttft_p95_s" else number >= low
        if not (above_low and number <= high):
            raise CostInputError(
                f"{where}.{key} = {value}: expected {unit} between {low:g} and {high:g}; "
                "is it in the wrong unit?"
            )
        values[key] = number
    return Slo(**values)


def _number(value: object, key: str, expected: str = "a number") -> float:
    if isinstance(value, bool):
        raise CostInputError(f"{key} = {value!r}: expected {expected}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise CostInputError(f"{key} = {value!r}: expected {expected}")


# ------------------------------------------------------------------------------------ costs


@dataclass(frozen=True)
class Costs:
    """A host's ``hearth_costs``."""

    power_watts: float
    price_per_kwh: float
    purchase_price: float | None = None
    amortisation_months: int | None = None
    monthly_rent: float | None = None
    monthly_ops: float = 0.0
    utilisation: float = 1.0


@dataclass(frozen=True)
class MonthlyCost:
    capital: float
    power: float
    ops: float

    @property
    def total(self) -> float:
        return self.capital + self.power + self.ops


_POSITIVE = (
    "purchase_price",
    "amortisation_months",
    "monthly_rent",
    "power_watts",
    "price_per_kwh",
)


def parse_costs(raw: object, where: str = "hearth_costs") -> Costs:
    """:class:`Costs` from one host's ``hearth_costs``; refuses zero or negative prices, power or
    amortisation, a utilisation outside (0, 1], and a purchase without amortisation (or with a
    rent as well), naming the key."""
    if not isinstance(raw, Mapping):
        raise CostInputError(f"{where}: expected a mapping (purchase_price, power_watts, …)")
    known = {*_POSITIVE, "monthly_ops", "utilisation"}
    values: dict[str, float] = {}
    for key, value in raw.items():
        if key not in known:
            raise CostInputError(f"{where}.{key}: unknown key; known: {', '.join(sorted(known))}")
        number = _number(value, f"{where}.{key}")
        if key in _POSITIVE and number <= 0:
            raise CostInputError(f"{where}.{key} = {value}: expected a number greater than 0")
        if key == "monthly_ops" and number < 0:
            raise CostInputError(f"{where}.{key} = {value}: expected 0 or more")
        if key == "utilisation" and not 0 < number <= 1:
            raise CostInputError(
                f"{where}.utilisation = {value}: expected a share of the month, greater than 0 "
                "and at most 1 (30 % is 0.3)"
            )
        values[str(key)] = number
    for key in ("power_watts", "price_per_kwh"):
        if key not in values:
            raise CostInputError(f"{where}.{key}: required (the power cost needs it)")
    purchase, months = values.get("purchase_price"), values.get("amortisation_months")
    rent = values.get("monthly_rent")
    if rent is not None and purchase is not None:
        raise CostInputError(
            f"{where}: both purchase_price and monthly_rent: declare the one that applies"
        )
    if rent is None and purchase is None:
        raise CostInputError(f"{where}: declare purchase_price (with amortisation_months) or "
                             "monthly_rent")  # fmt: skip
    if purchase is not None and months is None:
        raise CostInputError(f"{where}.amortisation_months: required with purchase_price")
    if months is not None and not float(months).is_integer():
        raise CostInputError(f"{where}.amortisation_months = {months:g}: expected whole months")
    return Costs(
        power_watts=values["power_watts"],
        price_per_kwh=values["price_per_kwh"],
        purchase_price=purchase,
        amortisation_months=None if months is None else int(months),
        monthly_rent=rent,
        monthly_ops=values.get("monthly_ops", 0.0),
        utilisation=values.get("utilisation", 1.0),
    )


def monthly_cost(costs: Costs) -> MonthlyCost:
    """Capital (amortisation or rent), power and operations of one month."""
    if costs.monthly_rent is not None:
        capital = costs.monthly_rent
    else:
        assert costs.purchase_price is not None and costs.amortisation_months
        capital = costs.purchase_price / costs.amortisation_months
    power = costs.power_watts / 1000 * HOURS_PER_MONTH * costs.price_per_kwh
    return MonthlyCost(capital=capital, power=power, ops=costs.monthly_ops)


def million_tokens_per_month(tokens_per_s: float, utilisation: float = 1.0) -> float:
    return tokens_per_s * utilisation * SECONDS_PER_MONTH / 1e6


def cost_per_million(monthly: float, tokens_per_s: float, utilisation: float = 1.0) -> float:
    """Cost per million output tokens at ``tokens_per_s`` for a share of the month."""
    if tokens_per_s <= 0:
        return math.inf
    return monthly / million_tokens_per_month(tokens_per_s, utilisation)


@dataclass(frozen=True)
class BreakEven:
    cloud: str
    usd_per_million: float
    million_tokens_per_month: float
    utilisation: float | None  # of the measured capacity; > 1: the host can never reach it


def break_even(monthly: float, price: CloudPrice, tokens_per_s: float | None) -> BreakEven:
    """The monthly volume at which the host costs what the cloud would, and the utilisation of
    the host's capacity that volume takes."""
    volume = monthly / price.usd_per_million
    capacity = million_tokens_per_month(tokens_per_s) if tokens_per_s else None
    return BreakEven(
        price.name, price.usd_per_million, volume, volume / capacity if capacity else None
    )


# ------------------------------------------------------------------------------ cloud prices


@dataclass(frozen=True)
class CloudPrice:
    name: str
    usd_per_million: float
    date: str = ""
    source: str = ""


def _load_data(name: str) -> dict[str, Any]:
    data = yaml.safe_load((paths.data_dir() / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def default_cloud_prices() -> tuple[CloudPrice, ...]:
    """Hearth's dated table (``cloud_prices.yml``)."""
    return tuple(parse_cloud_prices(_load_data("cloud_prices.yml")["prices"], "cloud_prices.yml"))


def parse_cloud_prices(raw: object, where: str = "hearth_cloud_prices") -> list[CloudPrice]:
    """The inventory's ``hearth_cloud_prices`` (empty or unset: the default table)."""
    if raw is None or raw == []:
        return list(default_cloud_prices())
    if not isinstance(raw, list):
        raise CostInputError(f"{where}: expected a list of {{name, usd_per_million}}")
    prices = []
    for i, item in enumerate(raw):
        key = f"{where}[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise CostInputError(f"{key}: expected a mapping with name and usd_per_million")
        value = item.get("usd_per_million")
        number = _number(value, f"{key}.usd_per_million")
        if number <= 0:
            raise CostInputError(f"{key}.usd_per_million = {value}: expected a number above 0")
        prices.append(
            CloudPrice(item["name"], number, str(item.get("date", "")), str(item.get("source", "")))
        )
    return prices


# ---------------------------------------------------------------------------------- roofline


def step_seconds(
    weights: float, kv_per_token: float, context: float, batch: int, bw: float
) -> float:
    """One decode step of ``batch`` sequences, memory-bound, on one GPU (bytes, GB/s)."""
    return (weights + batch * kv_per_token * context) / (bw * 1e9)


def roofline_capacity(
    weights: float,
    kv_per_token: float,
    context: float,
    bandwidth_gbs: float,
    itl_ms: float,
    max_batch: int,
) -> tuple[int, float]:
    """The largest batch (≤ ``max_batch``) whose decode step still meets ``itl_ms``, and the
    tokens/s it produces: the knee the roofline predicts. ``(0, 0.0)`` when even one sequence is
    too slow."""
    budget = itl_ms / 1000 * bandwidth_gbs * 1e9 - weights
    if budget < 0:
        return 0, 0.0
    batch = max_batch if kv_per_token * context <= 0 else int(budget // (kv_per_token * context))
    batch = max(0, min(batch, max_batch))
    if batch == 0:
        return 0, 0.0
    return batch, batch / step_seconds(weights, kv_per_token, context, batch, bandwidth_gbs)


# --------------------------------------------------------------------------------- GPU catalog


@dataclass(frozen=True)
class GpuModel:
    name: str
    memory_mib: int
    bandwidth_gbs: float
    fp16_tflops: float
    power_watts: float
    price_usd: float
    nvlink: bool = False


@dataclass(frozen=True)
class Server:
    price_usd: float
    power_watts: float
    max_gpus: int


@cache
def gpu_catalog() -> tuple[tuple[GpuModel, ...], Server]:
    """The GPUs of ``gpu_catalog.yml`` and what a server adds around them."""
    data = _load_data("gpu_catalog.yml")
    gpus = tuple(GpuModel(**g) for g in data["gpus"])
    return gpus, Server(**data["server"])


# ------------------------------------------------------------------------------------ sizing


@dataclass
class SizingOption:
    """One configuration: ``replicas`` copies of the model, each on ``tp`` GPUs of one kind."""

    gpu: str
    tp: int
    replicas: int
    fits: bool
    reason: str = ""
    batch_per_replica: int = 0
    step_ms: float = 0.0
    ttft_s: float = 0.0
    capacity_tokens_per_s: float = 0.0
    need_per_gpu_gib: float = 0.0
    purchase_usd: float = 0.0
    monthly_usd: float = 0.0
    usd_per_million_at_demand: float = 0.0
    usd_per_million_at_capacity: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return self.tp * self.replicas

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gpus": self.gpus, "estimate": True}


@dataclass(frozen=True)
class Demand:
    users: int
    tokens_per_user_day: float
    busy_hours: float = 8.0
    prompt_tokens: int = 1000
    output_tokens: int = 300

    @property
    def tokens_per_day(self) -> float:
        return self.users * self.tokens_per_user_day

    @property
    def peak_tokens_per_s(self) -> float:
        """Output tokens/s while the day's tokens are spread over the busy hours."""
        return self.tokens_per_day / (self.busy_hours * 3600)

    @property
    def million_tokens_per_month(self) -> float:
        return self.tokens_per_day * 365 / 12 / 1e6


def _sizing_model(model: str, quantization: str | None, tp: int, context: int, seqs: int) -> Any:
    from hearth.models import ModelSource, ModelSpec, catalog

    return ModelSpec(
        name=model, version="sizing", engine="vllm", format="safetensors",
        source=ModelSource(type="path", path="/"), files=(), architecture=catalog()[model],
        catalog=model, dtype="fp16", quantization=quantization, max_model_len=context,
        max_num_seqs=seqs, gpus=tuple(range(tp)),
    )  # fmt: skip


def check_model(model: str) -> None:
    from hearth.models import catalog

    known = catalog()
    if model not in known:
        raise CostInputError(
            f"--model {model!r}: not in the model catalog (src/hearth/data/model_catalog.yml); "
            f"known: {', '.join(sorted(known))}"
        )


def size_one(
    model: str,
    quantization: str,
    demand: Demand,
    slo: Slo,
    gpu: GpuModel,
    tp: int,
    replicas: int,
    server: Server,
    price_per_kwh: float = 0.15,
    amortisation_months: int = 36,
) -> SizingOption:
    """Whether ``replicas`` × ``tp`` GPUs of ``gpu`` carry ``demand`` within ``slo`` at the
    roofline, and what they cost (an estimate)."""
    from hearth import plan

    option = SizingOption(gpu=gpu.name, tp=tp, replicas=replicas, fits=False)
    context = demand.prompt_tokens + demand.output_tokens
    average = demand.prompt_tokens + demand.output_tokens / 2
    spec = _sizing_model(model, QUANTIZATIONS[quantization], tp, context, 1)
    found = plan.weights_bytes(spec)
    kv = plan.kv_bytes_per_token(spec, per_gpu=True)
    assert found is not None and kv is not None
    weights = math.ceil(found[0] / tp)
    overhead = plan.overhead_bytes(spec, weights)
    budget = plan.VLLM_DEFAULT_SHARE * gpu.memory_mib * plan.MIB
    rate = demand.peak_tokens_per_s / replicas
    bw = gpu.bandwidth_gbs * 1e9
    # smallest batch b with b / step(b) >= rate: b (bw - rate·kv·avg) >= rate·weights
    room = bw - rate * kv * average
    batch = max(1, math.ceil(rate * weights / room)) if room > 0 else 0
    need = weights + max(batch, 1) * kv * context + overhead
    option.need_per_gpu_gib = need / plan.GIB
    arch = spec.architecture
    active = (arch.active_params_b or arch.params_b or 0) * 1e9
    prefill = 2 * active * demand.prompt_tokens / (tp * gpu.fp16_tflops * 1e12 * PREFILL_EFFICIENCY)
    if batch == 0:
        option.reason = f"{gpu.name} × {tp}: the KV cache traffic alone exceeds the bandwidth"
        return option
    step = step_seconds(weights, kv, average, batch, gpu.bandwidth_gbs)
    option.batch_per_replica, option.step_ms = batch, step * 1000
    option.ttft_s = prefill + step
    cap_batch = int((budget - weights - overhead) // (kv * context)) if kv else batch
    knee_batch, knee_rate = roofline_capacity(
        weights, kv, average, gpu.bandwidth_gbs, slo.itl_p95_ms, max(cap_batch, 0)
    )
    option.capacity_tokens_per_s = knee_rate * replicas
    servers = math.ceil(option.gpus / server.max_gpus)
    option.purchase_usd = option.gpus * gpu.price_usd + servers * server.price_usd
    watts = option.gpus * gpu.power_watts + servers * server.power_watts
    monthly = monthly_cost(Costs(
        power_watts=watts, price_per_kwh=price_per_kwh, purchase_price=option.purchase_usd,
        amortisation_months=amortisation_months,
    )).total  # fmt: skip
    option.monthly_usd = monthly
    option.usd_per_million_at_demand = monthly / demand.million_tokens_per_month
    option.usd_per_million_at_capacity = cost_per_million(monthly, option.capacity_tokens_per_s)
    if need > budget:
        option.reason = (
            f"needs {need / plan.GIB:.1f} GiB per GPU (weights {weights / plan.GIB:.1f}, KV "
            f"cache for {batch} sequences, overhead), {gpu.name} gives "
            f"{budget / plan.GIB:.1f} GiB (90 %)"
        )
    elif step * 1000 > slo.itl_p95_ms:
        option.reason = f"a decode step takes {step * 1000:.0f} ms > itl_p95_ms {slo.itl_p95_ms:g}"
    elif option.ttft_s > slo.ttft_p95_s:
        option.reason = f"first token after {option.ttft_s:.2f} s > ttft_p95_s {slo.ttft_p95_s:g}"
    else:
        option.fits = True
    if tp > 1 and not gpu.nvlink:
        option.notes.append("tensor parallel over PCIe: expect less than the roofline")
    if knee_batch == 0:
        option.notes.append("no batch meets the SLO at the roofline")
    return option


def size(
    model: str,
    quantization: str,
    demand: Demand,
    slo: Slo = DEFAULT_SLO,
    gpus: Sequence[str] = (),
    price_per_kwh: float = 0.15,
    amortisation_months: int = 36,
) -> tuple[list[SizingOption], list[SizingOption]]:
    """The configurations that carry ``demand``, cheapest first (for each GPU and tensor-parallel
    size, the fewest replicas that do), and the closest that do not (one per GPU)."""
    check_model(model)
    if quantization not in QUANTIZATIONS:
        raise CostInputError(
            f"--quantization {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}"
        )
    if demand.users <= 0 or demand.tokens_per_user_day <= 0:
        raise CostInputError("--users and --tokens-per-user-day: expected numbers above 0")
    catalog, server = gpu_catalog()

    def named(gpu: GpuModel, word: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", gpu.name, re.I) is not None

    chosen = [g for g in catalog if not gpus or any(named(g, n) for n in gpus)]
    if not chosen:
        raise CostInputError(
            f"--gpu {', '.join(gpus)}: no such GPU in the catalog "
            f"(src/hearth/data/gpu_catalog.yml): {', '.join(g.name for g in catalog)}"
        )
    fitting: list[SizingOption] = []
    closest: dict[str, SizingOption] = {}
    for gpu in chosen:
        for tp in TP_SIZES:
            if tp > server.max_gpus:
                continue
            for replicas in range(1, MAX_REPLICAS + 1):
                option = size_one(
                    model, quantization, demand, slo, gpu, tp, replicas, server,
                    price_per_kwh, amortisation_months,
                )  # fmt: skip
                if option.fits:
                    fitting.append(option)
                    break
                closest.setdefault(gpu.name, option)
                if "GiB per GPU" in option.reason and replicas > 1:
                    break  # more replicas do not make one fit in memory
    fitting.sort(key=lambda o: (o.purchase_usd, o.monthly_usd, o.gpus))
    fitted_gpus = {o.gpu for o in fitting}
    refused = [o for name, o in closest.items() if name not in fitted_gpus]
    return fitting, refused


# ------------------------------------------------------------------------ the inventory's cost

ESTIMATE_CONTEXT = 1024  # tokens per sequence the roofline estimate assumes (prompt + answer)


@dataclass
class HostCost:
    """One host (or the whole inventory): what it costs a month and per million tokens."""

    host: str
    monthly: MonthlyCost
    utilisation: float
    models: list[str] = field(default_factory=list)
    tokens_per_s: float | None = None
    basis: str = ""
    break_evens: list[BreakEven] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def per_million_at_knee(self) -> float | None:
        if not self.tokens_per_s:
            return None
        return cost_per_million(self.monthly.total, self.tokens_per_s)

    @property
    def per_million_at_utilisation(self) -> float | None:
        if not self.tokens_per_s:
            return None
        return cost_per_million(self.monthly.total, self.tokens_per_s, self.utilisation)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "models": self.models,
            "basis": self.basis,
            "estimate": self.basis.startswith("roofline"),
            "monthly": {**asdict(self.monthly), "total": self.monthly.total},
            "tokens_per_s_at_knee": self.tokens_per_s,
            "utilisation": self.utilisation,
            "usd_per_million_at_knee": self.per_million_at_knee,
            "usd_per_million_at_utilisation": self.per_million_at_utilisation,
            "break_even": [asdict(b) for b in self.break_evens],
            "notes": self.notes,
        }


@dataclass
class CostReport:
    hosts: list[HostCost]
    total: HostCost | None
    prices: list[CloudPrice]

    def as_dict(self) -> dict[str, Any]:
        return {
            "hosts": [h.as_dict() for h in self.hosts],
            "inventory": None if self.total is None else self.total.as_dict(),
            "cloud_prices": [asdict(p) for p in self.prices],
            "hours_per_month": HOURS_PER_MONTH,
        }


def _roofline_tokens(placement: Any, slo: Slo) -> float | None:
    from hearth import plan

    if placement.need is None or placement.model.on_cpu:
        return None
    bandwidth = min((g.bandwidth_gbs for g in placement.gpus if g.bandwidth_gbs), default=None)
    kv = plan.kv_bytes_per_token(placement.model, per_gpu=True)
    if bandwidth is None or kv is None:
        return None
    context = min(ESTIMATE_CONTEXT, placement.model.max_model_len or ESTIMATE_CONTEXT)
    _, rate = roofline_capacity(
        placement.need.weights, kv, context, bandwidth, slo.itl_p95_ms,
        placement.model.max_num_seqs or 256,
    )  # fmt: skip
    return rate or None


def inventory_costs(
    inv: Any, results: Mapping[str, Mapping[str, Any]], slo: Slo = DEFAULT_SLO
) -> CostReport:
    """Every host with ``hearth_costs``: its monthly cost, its capacity at the knee (from the
    latest ``hearth bench`` results of its models, else the roofline, marked as an estimate), the
    cost per million output tokens at the knee and at its utilisation, and the break-even volume
    with each cloud price; then the same for the whole inventory."""
    from hearth import plan

    problems: list[str] = []
    parsed: dict[str, Costs] = {}
    for host in inv.hosts:
        raw = inv.hostvars(host).get("hearth_costs")
        if raw is None:
            continue
        try:
            parsed[host] = parse_costs(raw, f"host {host}: hearth_costs")
        except CostInputError as e:
            problems.append(e.message)
    if problems:
        raise CostInputError("cannot cost the inventory:\n  " + "\n  ".join(problems))
    first = inv.hosts[0] if inv.hosts else None
    prices = parse_cloud_prices(inv.hostvars(first).get("hearth_cloud_prices") if first else None)
    placements = plan.plan_loaded(inv).placements
    rows: list[HostCost] = []
    for host, costs in parsed.items():
        row = HostCost(host, monthly_cost(costs), costs.utilisation)
        rates: list[float] = []
        bases: set[str] = set()
        for p in (p for p in placements if p.host == host):
            row.models.append(p.model.name)
            measured = results.get(p.model.name)
            if measured and host in measured.get("hosts", []):
                the_knee = measured.get("knee")
                if the_knee:
                    rates.append(float(the_knee["tokens_per_s"]) / len(measured["hosts"]))
                    bases.add(f"bench {measured['date']}")
                else:
                    row.notes.append(f"{p.model.name}: no level of the bench met the SLO")
                continue
            estimate = _roofline_tokens(p, slo)
            if estimate is None:
                row.notes.append(f"{p.model.name}: not measured and no roofline (CPU or no GPU)")
                continue
            rates.append(estimate)
            bases.add("roofline estimate")
        if len(row.models) > 1 and rates:
            row.notes.append("models measured one at a time: their sum is an upper bound")
        row.tokens_per_s = sum(rates) or None
        row.basis = " + ".join(sorted(bases)) if bases else "none"
        row.break_evens = [
            break_even(row.monthly.total, price, row.tokens_per_s) for price in prices
        ]
        rows.append(row)
    total = None
    if rows:
        monthly = MonthlyCost(
            sum(r.monthly.capital for r in rows),
            sum(r.monthly.power for r in rows),
            sum(r.monthly.ops for r in rows),
        )
        rate = sum(r.tokens_per_s or 0 for r in rows)
        used = sum((r.tokens_per_s or 0) * r.utilisation for r in rows)
        total = HostCost(
            "(inventory)", monthly, used / rate if rate else 1.0,
            sorted({m for r in rows for m in r.models}), rate or None,
            " + ".join(sorted({r.basis for r in rows if r.basis != "none"})) or "none",
        )  # fmt: skip
        total.break_evens = [break_even(monthly.total, p, total.tokens_per_s) for p in prices]
    return CostReport(rows, total, prices)
