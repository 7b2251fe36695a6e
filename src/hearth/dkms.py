"""Will the NVIDIA module load after the reboot? ``dkms status`` and the boot loader, read.

The failure this guards against: a driver or kernel upgrade after which DKMS did not build the
nvidia module for the kernel that boots next (the default boot entry, which is not always the
running kernel), so the host comes back without GPUs. Pure functions over recorded text:

- :func:`parse_status` reads ``dkms status`` of dkms 2.x (``name, version, kernel, arch:
  status``) and 3.x (``name/version, kernel, arch: status``), warnings and notes included;
- :func:`default_boot_kernel` finds the kernel release the boot loader starts by default, from
  ``grubby --default-kernel`` (Red Hat family), else ``/boot/grub/grub.cfg`` with
  ``/boot/grub/grubenv`` (``next_entry``, ``saved_entry``, numeric and ``a>b`` submenu paths,
  entry ids and titles), else the ``/vmlinuz`` symlink's target;
- :func:`verdict` says whether the module is built and installed for that kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# DKMS names of NVIDIA's kernel modules: nvidia (NVIDIA's packages), nvidia-current (Debian),
# nvidia-open / nvidia-current-open (the open flavour), nvidia-srv (Ubuntu's server branch).
NVIDIA_MODULE = re.compile(r"^nvidia(-current)?(-open|-srv)?(-[0-9]+)?$")
_WHERE = r"(?:, (?P<kernel>[^,]+), (?P<arch>[^:]+))?: (?P<status>.+)$"
_V2 = re.compile(r"^(?P<name>[^,/\s]+), (?P<version>[^,]+)" + _WHERE)  # dkms 2.x
_V3 = re.compile(r"^(?P<name>[^,/\s]+)/(?P<version>[^,:]+)" + _WHERE)  # dkms 3.x


@dataclass(frozen=True)
class Entry:
    """One line of ``dkms status``: a module version, for a kernel where it was built."""

    module: str
    version: str
    kernel: str  # "" for a module only added (source registered, nothing built)
    arch: str
    status: str  # added, built, installed
    note: str = ""  # "(original_module exists)", "(WARNING! Diff between built and …)"


def parse_status(text: str) -> list[Entry]:
    """The entries of ``dkms status`` output (either format); other lines (errors, warnings
    DKMS prints on their own line) are skipped."""
    found: list[Entry] = []
    for raw in text.splitlines():
        line = raw.strip()
        match = _V3.match(line) or _V2.match(line)
        if match is None:
            continue
        status, _, note = match["status"].strip().partition(" ")
        found.append(
            Entry(
                module=match["name"], version=match["version"].strip(),
                kernel=(match["kernel"] or "").strip(), arch=(match["arch"] or "").strip(),
                status=status.rstrip(","), note=note.strip(),
            )
        )  # fmt: skip
    return found


_KERNEL_OF_PATH = re.compile(r"vmlinuz-(?P<release>\S+)")


def _release(path: str) -> str | None:
    match = _KERNEL_OF_PATH.search(path or "")
    return match["release"] if match else None


@dataclass
class _Menu:
    title: str
    ident: str
    kernel: str | None = None
    children: list[_Menu] = field(default_factory=list)


_OPEN = re.compile(r"^\s*(menuentry|submenu)\s+(['\"])(?P<title>.*?)\2(?P<rest>.*)\{\s*$")
_ID = re.compile(r"\$menuentry_id_option\s+(['\"])(?P<id>.*?)\1")
_LINUX = re.compile(r"^\s*linux(efi|16)?\s+(?P<path>\S+)")
_DEFAULT = re.compile(r"^\s*set\s+default=(['\"]?)(?P<value>[^'\"]*)\1\s*$")


def _menus(cfg: str) -> tuple[list[_Menu], list[str]]:
    """The top-level menu of a grub.cfg (entries and submenus) and its ``set default=`` values."""
    top: list[_Menu] = []
    stack: list[_Menu] = []
    defaults: list[str] = []
    depth_stack: list[bool] = []  # for each open brace: was it a menu entry/submenu?
    for line in cfg.splitlines():
        opened = _OPEN.match(line)
        if opened:
            ident = _ID.search(opened["rest"])
            menu = _Menu(opened["title"], ident["id"] if ident else "")
            (stack[-1].children if stack else top).append(menu)
            stack.append(menu)
            depth_stack.append(True)
            continue
        if not stack:
            default = _DEFAULT.match(line)
            if default:
                defaults.append(default["value"])
        else:
            linux = _LINUX.match(line)
            if linux and stack[-1].kernel is None:
                stack[-1].kernel = _release(linux["path"])
        stripped = line.strip()
        if stripped.endswith("{") and not opened:
            depth_stack.append(False)
        elif stripped == "}" and depth_stack and depth_stack.pop():
            stack.pop()
    return top, defaults


def _grubenv(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def _pick(menu: list[_Menu], selector: str) -> _Menu | None:
    """The entry a GRUB default selects: an index, an id or title, or a ``>`` path of them."""
    current: list[_Menu] = menu
    chosen: _Menu | None = None
    for part in selector.split(">"):
        part = part.strip()
        if part.isdigit():
            index = int(part)
            chosen = current[index] if index < len(current) else None
        else:
            chosen = next((m for m in current if part in (m.ident, m.title)), None)
        if chosen is None:
            return None
        current = chosen.children
    while chosen is not None and chosen.kernel is None and chosen.children:
        chosen = chosen.children[0]  # a submenu selected as a whole boots its first entry
    return chosen


def default_boot_kernel(
    *, grubby: str = "", grub_cfg: str = "", grubenv: str = "", vmlinuz: str = ""
) -> tuple[str | None, str]:
    """``(kernel release, how it was found)`` of the kernel the host boots by default, or
    ``(None, why not)``. ``grubby`` is ``grubby --default-kernel``'s output, ``vmlinuz`` the
    target of the ``/vmlinuz`` (or ``/boot/vmlinuz``) symlink."""
    release = _release(grubby.strip())
    if release:
        return release, "grubby --default-kernel"
    if grub_cfg.strip():
        menu, defaults = _menus(grub_cfg)
        env = _grubenv(grubenv)
        selector = "0"
        source = "grub.cfg (first entry)"
        if env.get("next_entry"):
            selector, source = env["next_entry"], "grubenv next_entry (one-time)"
        else:
            plain = [d for d in defaults if d not in ("${next_entry}", "")]
            if plain:
                selector = plain[-1]
                source = f"grub.cfg default {selector!r}"
            if selector == "${saved_entry}":
                selector = env.get("saved_entry", "0") or "0"
                source = f"grubenv saved_entry {selector!r}"
        entry = _pick(menu, selector)
        if entry is not None and entry.kernel:
            return entry.kernel, source
    release = _release(vmlinuz.strip())
    if release:
        return release, "the /vmlinuz symlink"
    return None, "no boot loader configuration found (grubby, /boot/grub/grub.cfg, /vmlinuz)"


def verdict(
    status: str,
    boot_kernel: str | None,
    running_kernel: str = "",
    *,
    how: str = "",
    module: re.Pattern[str] = NVIDIA_MODULE,
) -> dict[str, Any]:
    """``{ok, kernel, module, version, message}``: is an NVIDIA module built and installed by
    DKMS for the kernel that boots next? ``ok`` is False, with the reason in operator's terms,
    when it is not (or when the next kernel cannot be told)."""
    entries = [e for e in parse_status(status) if module.match(e.module)]
    where = f" ({how})" if how else ""
    if boot_kernel is None:
        message = f"cannot tell which kernel boots next: {how}; not rebooting"
        return {"ok": False, "kernel": None, "module": "", "version": "", "message": message}
    for_boot = [e for e in entries if e.kernel == boot_kernel]
    installed = [e for e in for_boot if e.status == "installed"]
    if installed:
        entry = installed[0]
        warn = f" [{entry.note}]" if "WARNING" in entry.note else ""
        return {"ok": not warn, "kernel": boot_kernel, "module": entry.module,
                "version": entry.version,
                "message": (f"DKMS module {entry.module} {entry.version} is installed for "
                            f"{boot_kernel}, the kernel that boots next{where}{warn}")}  # fmt: skip
    others = sorted(
        {f"{e.module} {e.version} for {e.kernel or 'no kernel'}: {e.status}" for e in entries}
    )
    running = ""
    if running_kernel and running_kernel != boot_kernel:
        running = f"; the running kernel is {running_kernel}"
    state = ", ".join(f"{e.status}" for e in for_boot) + " only" if for_boot else "not built"
    return {
        "ok": False,
        "kernel": boot_kernel,
        "module": entries[0].module if entries else "",
        "version": entries[0].version if entries else "",
        "message": (
            f"no nvidia module for the next kernel: DKMS has it {state} for {boot_kernel}, the "
            f"kernel that boots next{where}{running}. DKMS has: {'; '.join(others) or 'nothing'}. "
            f"Not rebooting (the host would come back without GPUs): install "
            f"linux-headers-{boot_kernel} and run `dkms autoinstall -k {boot_kernel}`, or make "
            "the running kernel the default, then run `hearth upgrade` again"
        ),
    }


def read_report(text: str) -> dict[str, str]:
    """The sections of one probe's output, ``=== NAME`` lines each starting one (the upgrade
    role reads ``dkms status``, ``grubby``, ``grubenv``, ``vmlinuz`` and ``grub.cfg`` at once)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("=== "):
            current = sections.setdefault(line[4:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def verdict_of_report(text: str, running_kernel: str = "") -> dict[str, Any]:
    """:func:`verdict` from one probe's output (:func:`read_report`)."""
    parts = read_report(text)
    kernel, how = default_boot_kernel(
        grubby=parts.get("grubby", ""), grub_cfg=parts.get("grub.cfg", ""),
        grubenv=parts.get("grubenv", ""), vmlinuz=parts.get("vmlinuz", ""),
    )  # fmt: skip
    return verdict(parts.get("dkms", ""), kernel, running_kernel, how=how)
