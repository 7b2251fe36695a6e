"""What each host needs from a bundle, from the inventory's declared state.

The roles a host gets come from the playbooks (:func:`hearth.layers.roles_for_hosts`); each role
says what it installs in a small declaration, ``roles/<role>/meta/bundle.yml``::

    packages:                       # distribution packages (apt or dnf names), `name` or
      - names: "{{ common_packages + common_extra_packages }}"      # `name=version-glob`
      - names: "{{ [_common_chrony_package] }}"
        when: "{{ common_time_sync_enabled }}"
      - names: "{{ container_runtime_toolkit_packages }}"
        optional: true              # the role skips them when no source offers them
    images:                         # container images the role runs on the host
      - ref: "{{ grafana_image }}"  # an image in the control node's Docker (by tag or id)
        archive_var: grafana_image_archive         # the role loads it itself from this path:
        sha256_var: grafana_image_archive_sha256   # `up --bundle` sets both to the bundle's copy
      - recipe: llamacpp            # one of Hearth's locally built engine images
    models: "{{ hearth_models }}"   # model declarations whose files the role places
    files:                          # anything else fetched from outside (dashboards …)
      - {url: "https://…/node.json", sha256: "<64 hex>", dest: dashboards/node.json}
      - {src: files/dashboards/gpu.json, dest: dashboards/gpu.json}   # inside the role

Every value is a template evaluated with the host's variables (the inventory over the role
defaults, resolved by Ansible), the role's ``vars/main.yml`` and the per-OS file the role's
preflight would load (``vars/<Distribution>-<major>.yml``, ``<Distribution>.yml``,
``<os_family>.yml``) for the bundle's target, and ``ansible_facts`` describing that target (no
host is contacted). A role without ``meta/bundle.yml`` may have one shipped with Hearth under
``hearth/bundle/declarations/<role>.yml`` (for roles whose owners have not written theirs yet);
a role with neither installs nothing as far as the bundle knows, and the build says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearth import layers, paths
from hearth.errors import InvalidInputError

if TYPE_CHECKING:
    from hearth.inventory import Inventory

__all__ = [
    "TARGETS",
    "FileNeed",
    "HostNeeds",
    "ImageNeed",
    "PackageNeed",
    "Plan",
    "Target",
    "declaration_file",
    "plan_for_inventory",
]

DECLARATION = "bundle.yml"
_KEYS = frozenset({"packages", "images", "models", "files"})


@dataclass(frozen=True)
class Target:
    """An operating system a bundle carries a repository for."""

    name: str
    distribution: str
    major: str
    os_family: str
    pkg_mgr: str
    release: str
    architecture: str = "x86_64"
    buildable: bool = False

    def facts(self) -> dict[str, Any]:
        return {
            "distribution": self.distribution,
            "distribution_major_version": self.major,
            "distribution_release": self.release,
            "os_family": self.os_family,
            "architecture": self.architecture,
            "pkg_mgr": self.pkg_mgr,
            "service_mgr": "systemd",
        }


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("debian-12", "Debian", "12", "Debian", "apt", "bookworm", buildable=True),
        Target("ubuntu-22.04", "Ubuntu", "22", "Debian", "apt", "jammy"),
        Target("ubuntu-24.04", "Ubuntu", "24", "Debian", "apt", "noble"),
        Target("rocky-9", "Rocky", "9", "RedHat", "dnf", "blue onyx"),
        Target("rhel-9", "RedHat", "9", "RedHat", "dnf", "plow"),
    )
}


@dataclass(frozen=True)
class PackageNeed:
    spec: str  # name, or name=version-glob
    role: str
    optional: bool = False

    @property
    def name(self) -> str:
        return self.spec.split("=", 1)[0]

    @property
    def version_glob(self) -> str | None:
        return self.spec.split("=", 1)[1] if "=" in self.spec else None


@dataclass(frozen=True)
class ImageNeed:
    """An image a role runs. With ``archive_var`` the role loads it itself from the archive that
    variable names (``up --bundle`` sets it); otherwise the offline_repo role loads it."""

    ref: str  # a tag or id in the control node's Docker; for recipes, the recipe's tag
    role: str
    recipe: str | None = None
    optional: bool = False
    archive_var: str | None = None
    sha256_var: str | None = None


@dataclass(frozen=True)
class FileNeed:
    dest: str
    role: str
    url: str | None = None
    sha256: str | None = None
    src: Path | None = None


@dataclass
class HostNeeds:
    host: str
    target: Target
    roles: list[str]
    packages: list[PackageNeed] = field(default_factory=list)
    images: list[ImageNeed] = field(default_factory=list)
    models: list[Any] = field(default_factory=list)  # hearth.models.ModelSpec
    files: list[FileNeed] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)  # roles with no declaration


@dataclass
class Plan:
    hosts: dict[str, HostNeeds] = field(default_factory=dict)

    @property
    def targets(self) -> list[Target]:
        return sorted({h.target for h in self.hosts.values()}, key=lambda t: t.name)

    def package_sets(self, target: Target) -> list[tuple[tuple[PackageNeed, ...], list[str]]]:
        """Distinct package sets of the hosts on ``target`` (each resolved on its own, since two
        hosts' sets may conflict), with the hosts that have each."""
        groups: dict[tuple[PackageNeed, ...], list[str]] = {}
        for host in self.hosts.values():
            if host.target != target or not host.packages:
                continue
            key = tuple(sorted(set(host.packages), key=lambda p: (p.spec, p.role, p.optional)))
            groups.setdefault(key, []).append(host.host)
        return sorted(groups.items(), key=lambda item: item[1])

    def undeclared_roles(self) -> list[str]:
        return sorted({r for h in self.hosts.values() for r in h.undeclared})


def declaration_file(role: str, roles_dir: Path | None = None) -> Path | None:
    """The role's own ``meta/bundle.yml``, else the one Hearth ships for it, else ``None``."""
    own = (roles_dir or paths.roles_dir()) / role / "meta" / DECLARATION
    if own.is_file():
        return own
    shipped = Path(__file__).resolve().parent / "declarations" / f"{role}.yml"
    return shipped if shipped.is_file() else None


def _load(loader: Any, path: Path) -> Any:
    try:
        return loader.load_from_file(str(path), trusted_as_template=True)
    except TypeError:  # pragma: no cover - ansible-core < 2.19: no data tagging
        return loader.load_from_file(str(path))


def _role_vars(loader: Any, role_dir: Path, target: Target) -> dict[str, Any]:
    """vars/main.yml, then the first per-OS file the role's preflight would include."""
    merged: dict[str, Any] = {}
    vars_dir = role_dir / "vars"
    main = vars_dir / "main.yml"
    if main.is_file():
        merged |= dict(_load(loader, main) or {})
    for name in (
        f"{target.distribution}-{target.major}.yml",
        f"{target.distribution}.yml",
        f"{target.os_family}.yml",
        "default.yml",  # the last resort some roles' first_found lists name
    ):
        if (vars_dir / name).is_file():
            merged |= dict(_load(loader, vars_dir / name) or {})
            break
    return merged


def _as_list(value: Any, where: str) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence):
        flat: list[Any] = []
        for item in value:
            flat.extend(_as_list(item, where) if isinstance(item, list | tuple) else [item])
        return flat
    raise InvalidInputError(f"{where}: expected a list or a string, got {value!r}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


class _Evaluator:
    def __init__(self, inventory: Inventory, host: str, target: Target) -> None:
        from ansible.parsing.dataloader import DataLoader

        from hearth.inventory import use_hearth_filters

        use_hearth_filters()
        self.inventory = inventory
        self.host = host
        self.target = target
        self.loader = DataLoader()

    def declaration(
        self, role: str, host_vars: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Path] | None:
        from ansible.errors import AnsibleError
        from ansible.template import Templar

        path = declaration_file(role, self.inventory.roles_dir)
        if path is None:
            return None
        raw = _load(self.loader, path) or {}
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"{path}: expected a mapping with {', '.join(sorted(_KEYS))}")
        unknown = set(raw) - _KEYS
        if unknown:
            raise InvalidInputError(
                f"{path}: unknown keys {sorted(unknown)}; expected {', '.join(sorted(_KEYS))}"
            )
        role_dir = self.inventory.roles_dir / role
        facts = self.target.facts()
        variables = {
            **host_vars,
            **_role_vars(self.loader, role_dir, self.target),
            "ansible_facts": facts,
            **{f"ansible_{k}": v for k, v in facts.items()},
            "inventory_hostname": self.host,
            "groups": self.inventory.groups,
            "group_names": sorted(
                g
                for g, members in self.inventory.groups.items()
                if self.host in members and g not in ("all", "ungrouped")
            ),
            "role_path": str(role_dir),
            "role_name": role,
        }
        templar = Templar(loader=self.loader, variables=variables)
        try:
            rendered = templar.template(raw)
        except AnsibleError as e:
            raise InvalidInputError(
                f"{path}: cannot evaluate for host {self.host} (target {self.target.name}): "
                f"{str(e).splitlines()[0]}"
            ) from e
        return dict(rendered), path


def _entries(data: Mapping[str, Any], key: str, path: Path) -> list[Mapping[str, Any]]:
    entries = []
    for item in _as_list(data.get(key), f"{path}: {key}"):
        entry = item if isinstance(item, Mapping) else ({"names": item} if key == "packages"
                                                        else {"ref": item})  # fmt: skip
        if "when" in entry and not _truthy(entry["when"]):
            continue
        entries.append(entry)
    return entries


def _needs_for(needs: HostNeeds, role: str, data: Mapping[str, Any], path: Path) -> None:
    from hearth.models import parse_models

    for entry in _entries(data, "packages", path):
        optional = _truthy(entry.get("optional", False))
        for spec in _as_list(entry.get("names"), f"{path}: packages.names"):
            spec = str(spec).strip()
            if not spec or " " in spec:
                raise InvalidInputError(f"{path}: package {spec!r} for {needs.host}: bad name")
            needs.packages.append(PackageNeed(spec, role, optional))
    for entry in _entries(data, "images", path):
        optional = _truthy(entry.get("optional", False))
        archive_var = str(entry["archive_var"]) if entry.get("archive_var") else None
        sha256_var = str(entry["sha256_var"]) if entry.get("sha256_var") else None
        for recipe in _as_list(entry.get("recipe"), f"{path}: images.recipe"):
            from hearth import images

            if str(recipe) not in images.RECIPES:
                continue  # an engine with no local recipe (vLLM): its image is declared by ref
            needs.images.append(ImageNeed(images.image_tag(str(recipe)), role, str(recipe),
                                          optional))  # fmt: skip
        for ref in _as_list(entry.get("ref"), f"{path}: images.ref"):
            needs.images.append(ImageNeed(str(ref), role, None, optional, archive_var, sha256_var))
    models = data.get("models")
    if models:
        needs.models.extend(parse_models(models))
    for entry in _entries(data, "files", path):
        dest = str(entry.get("dest") or "")
        src = entry.get("src")
        needs.files.append(
            FileNeed(
                dest=dest,
                role=role,
                url=str(entry["url"]) if entry.get("url") else None,
                sha256=str(entry["sha256"]).lower() if entry.get("sha256") else None,
                src=(path.parent.parent / str(src)) if src else None,
            )
        )


def plan_for_inventory(
    inventory: Inventory, playbook: Path | None = None, limit: Sequence[str] | None = None
) -> Plan:
    """Every host's needs, from the roles the playbooks give it and their declarations."""
    plan = Plan()
    assigned = layers.roles_for_hosts(inventory, playbook)
    for host in inventory.hosts:
        if limit is not None and host not in limit:
            continue
        roles = assigned.get(host, [])
        with_self = [*roles, "offline_repo"]
        host_vars = inventory.resolved_vars(host, with_self)
        target_name = str(host_vars.get("offline_repo_target") or "debian-12")
        target = TARGETS.get(target_name)
        if target is None:
            raise InvalidInputError(
                f"{host}: offline_repo_target {target_name!r}: expected one of {', '.join(TARGETS)}"
            )
        needs = HostNeeds(host=host, target=target, roles=roles)
        evaluator = _Evaluator(inventory, host, target)
        for role in with_self:
            if role == "offline_repo":  # what `hearth up --bundle` will pass: the images it loads
                refs = [i.ref for i in needs.images if i.archive_var is None]
                host_vars = {**host_vars, "hearth_bundle_host_images": {host: refs}}
            found = evaluator.declaration(role, host_vars)
            if found is None:
                if role != "offline_repo":
                    needs.undeclared.append(role)
                continue
            data, path = found
            _needs_for(needs, role, data, path)
        plan.hosts[host] = needs
    return plan
