"""Which NVIDIA driver, CUDA toolkit, GPU architecture and kernel can work together.

Pure functions over the table in ``hearth/data/gpu_compat.yml`` (sources named there). The same
code answers ``hearth check`` (no host contacted: the inventory's pins and declared GPU models) and
the GPU roles' preflight (through the ``hearth_gpu_compat`` filter in
``plugins/filter/hearth_gpu_layer.py``, with the host's kernel and detected GPUs added), so the CLI
and the roles refuse the same combinations with the same words.

Each problem is a :class:`Finding`: ``error`` for what cannot work (the driver does not know the
GPU, the toolkit needs a newer driver, open kernel modules on a pre-Turing GPU, a kernel older than
the branch supports), ``warning`` for what works with limits (PTX JIT only, minor version
compatibility). Every message says what would work.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from hearth import paths, yamlsrc
from hearth.errors import InvalidInputError

if TYPE_CHECKING:
    from hearth.inventory import Inventory

__all__ = [
    "Finding",
    "GpuSpec",
    "check",
    "check_inventory",
    "driver_branch",
    "max_cuda_for_driver",
    "min_driver_for_cuda",
    "resolve_gpu",
]

Level = Literal["error", "warning"]
FLAVORS = ("proprietary", "open")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_SM = re.compile(r"^(?:sm_?|compute_)?(\d{2,3})$", re.I)
_CC = re.compile(r"^(\d{1,2})\.(\d)$")


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class GpuSpec:
    """A GPU as the operator named it, resolved to a compute capability and an architecture."""

    name: str
    capability: str | None
    architecture: str | None


@functools.cache
def table() -> dict[str, Any]:
    data: dict[str, Any] = yamlsrc.safe_load((paths.data_dir() / "gpu_compat.yml").read_text())
    return data


def parse_version(version: object) -> tuple[int, ...]:
    """``"535.104.05"`` -> ``(535, 104, 5)``; a Debian/RPM suffix (``-1``, ``~deb12u1``) is cut."""
    text = str(version).strip()
    text = re.split(r"[-~+:]", text.split(":", 1)[-1], maxsplit=1)[0]
    if not _VERSION.match(text):
        raise ValueError(f"{version!r} is not a version number (expected digits and dots)")
    return tuple(int(part) for part in text.split("."))


def _fmt(version: Sequence[int]) -> str:
    return ".".join(str(p) for p in version)


def driver_branch(driver_version: str) -> int:
    return parse_version(driver_version)[0]


def cuda_release(cuda_version: str) -> str:
    """``"12.4.1"`` -> ``"12.4"``."""
    parts = parse_version(cuda_version)
    if len(parts) < 2:
        raise ValueError(f"CUDA version {cuda_version!r}: expected major.minor, such as 12.4")
    return f"{parts[0]}.{parts[1]}"


def _cuda_rows() -> list[tuple[str, dict[str, Any]]]:
    rows = table()["cuda"].items()
    return sorted(rows, key=lambda kv: parse_version(kv[0]))


def min_driver_for_cuda(cuda_version: str, minor_version_compat: bool = False) -> str:
    release = cuda_release(cuda_version)
    row = table()["cuda"].get(release)
    if row is None:
        known = ", ".join(k for k, _ in _cuda_rows())
        raise ValueError(f"CUDA {release} is not in Hearth's compatibility table (known: {known})")
    if minor_version_compat:
        return str(table()["minor_version_compat"][release.split(".")[0]])
    return str(row["min_driver"])


def max_cuda_for_driver(driver_version: str, minor_version_compat: bool = False) -> str | None:
    """The newest CUDA release in the table that ``driver_version`` runs, or None."""
    driver = parse_version(driver_version)
    best: str | None = None
    for release, row in _cuda_rows():
        need = row["min_driver"]
        if minor_version_compat:
            need = table()["minor_version_compat"][release.split(".")[0]]
        if parse_version(need) <= driver:
            best = release
    return best


def _arch_of(capability: str) -> str | None:
    for arch, row in table()["architectures"].items():
        if capability in row["capabilities"]:
            return str(arch)
    return None


def resolve_gpu(spec: str) -> GpuSpec:
    """A product name (``H100``, ``NVIDIA L40S``), a capability (``8.9``, ``sm_90``) or an
    architecture name (``hopper``)."""
    text = str(spec).strip()
    if not text:
        raise ValueError("empty GPU name")
    arches = table()["architectures"]
    if text.lower() in arches:
        row = arches[text.lower()]
        return GpuSpec(text, str(row["capabilities"][0]), text.lower())
    capability: str | None = None
    match = _CC.match(text)
    sm = _SM.match(text)
    if match:
        capability = f"{int(match.group(1))}.{match.group(2)}"
    elif sm:
        digits = sm.group(1)
        capability = f"{int(digits[:-1])}.{digits[-1]}"
    else:
        from hearth.gpu import capability_from_name

        capability = capability_from_name(text)
    return GpuSpec(text, capability, _arch_of(capability) if capability else None)


def _product_min_branch(name: str) -> int | None:
    found: int | None = None
    for row in table()["products"]:
        if re.search(row["pattern"], name, re.I):
            found = max(found or 0, int(row["min_branch"]))
    return found


def _min_kernel(branch: int) -> str:
    rows = [r for r in table()["kernel"] if branch >= int(r["from_branch"])]
    return str(max(rows, key=lambda r: int(r["from_branch"]))["min_kernel"])


def _kernel_version(kernel: str) -> tuple[int, ...] | None:
    match = re.match(r"^(\d+)\.(\d+)", kernel.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _check_cuda(
    driver: str, cuda: str, allow_compat: bool, findings: list[Finding]
) -> dict[str, Any] | None:
    try:
        release = cuda_release(cuda)
    except ValueError as e:
        findings.append(Finding("error", "cuda_version", str(e)))
        return None
    row: dict[str, Any] | None = table()["cuda"].get(release)
    if row is None:
        known = ", ".join(k for k, _ in _cuda_rows())
        findings.append(
            Finding(
                "error",
                "cuda_unknown",
                f"CUDA {release} is not in Hearth's compatibility table (known: {known}); pin one "
                "of those, or add the release with its minimum driver to "
                "hearth/data/gpu_compat.yml",
            )
        )
        return None
    full = parse_version(row["min_driver"])
    floor = parse_version(table()["minor_version_compat"][release.split(".")[0]])
    have = parse_version(driver)
    if have >= full:
        return row
    newest = max_cuda_for_driver(driver)
    newest_text = (
        f"pin cuda_version to {newest} or older (the newest CUDA driver {driver} runs)"
        if newest
        else f"no CUDA release in the table runs on driver {driver}"
    )
    if have >= floor and allow_compat:
        findings.append(
            Finding(
                "warning",
                "cuda_minor_version_compat",
                f"CUDA {release} runs on driver {driver} only through minor version "
                f"compatibility (>= {_fmt(floor)}): no PTX JIT of CUDA {release} code, some APIs "
                f"return cudaErrorCallRequiresNewerDriver. Full support needs driver >= "
                f"{_fmt(full)}.",
            )
        )
        return row
    hint = ""
    if have >= floor:
        hint = (
            f", or set cuda_allow_minor_version_compat: true to run it with the limits of minor "
            f"version compatibility (driver >= {_fmt(floor)})"
        )
    findings.append(
        Finding(
            "error",
            "cuda_needs_newer_driver",
            f"CUDA {release} needs NVIDIA driver >= {_fmt(full)}; the pinned driver is {driver}. "
            f"Raise nvidia_driver_version to {_fmt(full)} or newer (branch {full[0]}+), or "
            f"{newest_text}{hint}.",
        )
    )
    return row


def _check_gpu(
    gpu: GpuSpec,
    branch: int,
    cuda_row: dict[str, Any] | None,
    cuda: str | None,
    flavor: str,
    findings: list[Finding],
) -> None:
    if gpu.capability is None or gpu.architecture is None:
        findings.append(
            Finding(
                "warning",
                "gpu_unknown",
                f"GPU {gpu.name!r}: architecture unknown to Hearth's table, so its driver and CUDA "
                "compatibility were not checked; name it by compute capability (e.g. 8.9) or "
                "architecture (e.g. ada) in nvidia_driver_gpu_models",
            )
        )
        return
    arch = table()["architectures"][gpu.architecture]
    label = f"GPU {gpu.name} ({gpu.architecture}, compute capability {gpu.capability})"
    min_branch = max(int(arch["min_branch"]), _product_min_branch(gpu.name) or 0)
    if branch < min_branch:
        findings.append(
            Finding(
                "error",
                "gpu_needs_newer_driver",
                f"{label} is not supported by driver branch {branch}: it needs branch "
                f"{min_branch} or newer. Pin nvidia_driver_version to a {min_branch}+ release.",
            )
        )
    max_branch = arch.get("max_branch")
    if max_branch is not None and branch > int(max_branch):
        findings.append(
            Finding(
                "error",
                "gpu_dropped_by_driver",
                f"{label} is no longer supported after driver branch {max_branch}; the pinned "
                f"branch is {branch}. Pin nvidia_driver_version to a {max_branch} release.",
            )
        )
    if flavor == "open" and not arch.get("open_modules", False):
        findings.append(
            Finding(
                "error",
                "open_modules_unsupported",
                f"{label}: the open kernel modules support Turing and newer only; set "
                "nvidia_driver_kernel_flavor: proprietary for this host.",
            )
        )
    if flavor == "proprietary" and not arch.get("proprietary_modules", True):
        findings.append(
            Finding(
                "error",
                "proprietary_modules_unsupported",
                f"{label} runs only with the open kernel modules; set "
                "nvidia_driver_kernel_flavor: open for this host.",
            )
        )
    if cuda_row is None or cuda is None:
        return
    cap = parse_version(gpu.capability)
    low, high = parse_version(cuda_row["min_capability"]), parse_version(cuda_row["max_capability"])
    release = cuda_release(cuda)
    if cap < low:
        older = [r for r, row in _cuda_rows() if parse_version(row["min_capability"]) <= cap]
        way = f"pin cuda_version to {older[-1]} or older" if older else "no CUDA release fits"
        findings.append(
            Finding(
                "error",
                "gpu_dropped_by_cuda",
                f"CUDA {release} no longer builds for compute capability {gpu.capability} "
                f"({label}); {way}.",
            )
        )
    elif cap > high:
        newer = [r for r, row in _cuda_rows() if parse_version(row["max_capability"]) >= cap]
        way = f"CUDA {newer[0]} or newer builds native code for it" if newer else ""
        findings.append(
            Finding(
                "warning",
                "gpu_newer_than_cuda",
                f"CUDA {release} predates compute capability {gpu.capability} ({label}): code "
                f"runs only through PTX JIT; {way}.".rstrip("; ."),
            )
        )


def check(
    *,
    driver_version: str,
    cuda_version: str | None = None,
    gpus: Iterable[str] = (),
    kernel: str | None = None,
    kernel_flavor: str = "proprietary",
    allow_minor_version_compat: bool = False,
) -> list[Finding]:
    """Every problem with running these together; an empty list means they fit."""
    findings: list[Finding] = []
    try:
        branch = driver_branch(driver_version)
    except ValueError as e:
        return [Finding("error", "driver_version", f"nvidia_driver_version: {e}")]
    if kernel_flavor not in FLAVORS:
        findings.append(
            Finding(
                "error",
                "kernel_flavor",
                f"nvidia_driver_kernel_flavor {kernel_flavor!r}: expected one of {FLAVORS}",
            )
        )
    if kernel_flavor == "open" and branch < 515:
        findings.append(
            Finding(
                "error",
                "open_modules_too_old",
                f"the open kernel modules exist from branch 515; the pinned branch is {branch}. "
                "Use nvidia_driver_kernel_flavor: proprietary or a 515+ driver.",
            )
        )
    cuda_row = None
    if cuda_version:
        cuda_row = _check_cuda(driver_version, cuda_version, allow_minor_version_compat, findings)
    for name in gpus:
        try:
            spec = resolve_gpu(name)
        except ValueError as e:
            findings.append(Finding("error", "gpu_name", str(e)))
            continue
        _check_gpu(spec, branch, cuda_row, cuda_version, kernel_flavor, findings)
    if kernel:
        have = _kernel_version(kernel)
        need = _min_kernel(branch)
        if have is None:
            findings.append(Finding("warning", "kernel_unknown", f"kernel {kernel!r}: unreadable"))
        elif have < parse_version(need):
            findings.append(
                Finding(
                    "error",
                    "kernel_too_old",
                    f"driver branch {branch} needs Linux {need} or newer; this host runs {kernel}. "
                    "Upgrade the kernel, or pin an older driver branch.",
                )
            )
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    out = []
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def check_vars(variables: Mapping[str, Any], kernel: str | None = None) -> list[Finding]:
    """:func:`check` over a host's variables (the roles' names for the inputs)."""
    driver = variables.get("nvidia_driver_version")
    if not driver:
        return []
    cuda = variables.get("cuda_version") if "cuda_version" in variables else None
    gpus = variables.get("nvidia_driver_gpu_models") or []
    return check(
        driver_version=str(driver),
        cuda_version=str(cuda) if cuda else None,
        gpus=[str(g) for g in gpus],
        kernel=kernel,
        kernel_flavor=str(variables.get("nvidia_driver_kernel_flavor") or "proprietary"),
        allow_minor_version_compat=bool(variables.get("cuda_allow_minor_version_compat", False)),
    )


GPU_ROLES = ("nvidia_driver", "cuda")


def check_inventory(inventory: Inventory) -> list[str]:
    """Problems (errors) for every host that gets a GPU role; warnings are not returned."""
    from hearth.layers import roles_for_hosts

    problems: list[str] = []
    for host, roles in roles_for_hosts(inventory).items():
        if not any(r in GPU_ROLES for r in roles):
            continue
        variables = inventory.resolved_vars(host, roles)
        for finding in check_vars(variables):
            if finding.level == "error":
                problems.append(f"{host}: {finding.message}")
    return problems


def raise_for_inventory(inventory: Inventory) -> None:
    problems = check_inventory(inventory)
    if problems:
        raise InvalidInputError(
            "GPU compatibility: "
            + ("\n  ".join(["", *problems]) if len(problems) > 1 else problems[0])
            + "\nNothing was changed on any host."
        )
