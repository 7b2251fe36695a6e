#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hearth_gpu import (
    QUERY_FIELDS,
    classify_error,
    looks_like_error,
    parse_query_csv,
    parse_xml,
)

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Gather NVIDIA GPU facts from nvidia-smi
description:
  - Runs C(nvidia-smi -q -x) (or C(nvidia-smi --query-gpu=... --format=csv,nounits)) on the
    managed host and returns the GPUs as facts (C(hearth_gpus) and friends).
  - A host without an NVIDIA GPU is not an error. When C(nvidia-smi) is missing and no NVIDIA
    display-class PCI device (vendor C(0x10de), class C(0x03xxxx)) is found in
    C(/sys/bus/pci/devices) (or by C(lspci -n) where sysfs is unavailable) and
    C(/proc/driver/nvidia) does not exist, the module returns C(hearth_gpu_present=false) and
    C(hearth_gpu_status=absent), unchanged.
  - When an NVIDIA device is present but C(nvidia-smi) is missing or fails, the failure is
    classified (C(not_installed), C(no_driver), C(driver_library_mismatch), C(parse_error),
    C(unknown)) and returned in C(hearth_gpu_status) with an operator message in
    C(hearth_gpu_message). The task only fails when O(fail_on_error=true).
  - The module never changes the host; check mode is supported.
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  nvidia_smi_path:
    description:
      - Path to the C(nvidia-smi) binary. By default it is looked up on C(PATH) and the usual
        system directories.
    type: str
    required: false
  format:
    description:
      - Which C(nvidia-smi) output to read. C(xml) (C(-q -x)) carries MIG instances, CUDA version
        and virtualization mode; C(csv) (C(--query-gpu)) carries the compute capability on
        drivers 510 and newer.
    type: str
    choices: [xml, csv]
    default: xml
  fixture:
    description:
      - Parse this recorded file instead of running C(nvidia-smi). Meant for tests and for
        air-gapped diagnosis of output copied off a machine.
      - The file may hold C(-q -x) XML, C(--query-gpu) CSV (with a header line) or a recorded
        C(nvidia-smi) error message; its kind is detected from its content, O(format) is not
        used. No PCI or driver check decides presence in this mode; an error recording is
        reported as a present GPU with a failing C(nvidia-smi).
    type: path
    required: false
  fail_on_error:
    description:
      - Fail the task when an NVIDIA device is present but C(nvidia-smi) is missing, fails, or
        prints output that cannot be parsed. The failure message is the operator message.
      - An absent GPU never fails the task.
    type: bool
    default: false
notes:
  - Compute capability is taken from C(nvidia-smi) when it reports it (CSV C(compute_cap)); the
    C(-q -x) XML does not carry it in any schema up to v13, so it then comes from a small table of
    well-known products (C(compute_capability_source=table)), or is null.
"""

EXAMPLES = r"""
- name: Gather GPU facts
  hearth.gpu_facts:

- name: Require a working driver on GPU hosts
  hearth.gpu_facts:
    fail_on_error: true

- name: Use the CSV query (reports compute capability on drivers >= 510)
  hearth.gpu_facts:
    format: csv

- name: Diagnose a recorded `nvidia-smi -q -x` output
  hearth.gpu_facts:
    fixture: /tmp/node17-nvidia-smi.xml
  delegate_to: localhost

- name: Show the GPUs
  ansible.builtin.debug:
    msg: "{{ item.name }} {{ item.memory_total_mib }} MiB (sm {{ item.compute_capability }})"
  loop: "{{ hearth_gpus }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts about the NVIDIA GPUs of the host.
  returned: always
  type: dict
  contains:
    hearth_gpus:
      description:
        - One dict per GPU with C(index), C(name), C(uuid), C(pci_bus_id), C(pci_address)
          (sysfs form), C(memory_total_mib), C(memory_used_mib), C(memory_free_mib),
          C(driver_version), C(cuda_version), C(compute_capability),
          C(compute_capability_source) (C(nvidia-smi), C(table) or null), C(persistence_mode),
          C(ecc_enabled), C(ecc_errors_uncorrected) (aggregate count, else volatile),
          C(ecc_errors_uncorrected_volatile), C(ecc_errors_uncorrected_aggregate), C(mig_mode),
          C(mig_devices), C(temperature_c), C(power_draw_w), C(power_limit_w),
          C(utilization_gpu_pct), C(retired_pages_pending), C(remapped_rows_pending),
          C(virtualization_mode). Values nvidia-smi reports as N/A are null.
      type: list
      elements: dict
      returned: always
    hearth_gpu_driver_version:
      description: NVIDIA driver version, null when unknown.
      type: str
      returned: always
      sample: "535.54.03"
    hearth_gpu_cuda_version:
      description: CUDA version the driver supports (XML only), null when unknown.
      type: str
      returned: always
      sample: "12.2"
    hearth_gpu_count:
      description: Number of GPUs nvidia-smi listed.
      type: int
      returned: always
    hearth_gpu_present:
      description: Whether an NVIDIA GPU is present (listed by nvidia-smi, or seen on the PCI bus
        or through /proc/driver/nvidia).
      type: bool
      returned: always
    hearth_gpu_status:
      description: C(ok), C(absent), or an error code (C(not_installed), C(no_driver),
        C(driver_library_mismatch), C(parse_error), C(unknown)).
      type: str
      returned: always
    hearth_gpu_message:
      description: Human-readable summary, or what an operator should do about the error.
      type: str
      returned: always
    hearth_gpu_pci_devices:
      description: Number of NVIDIA display-class PCI devices found on this host (null when
        neither sysfs nor lspci could be read).
      type: int
      returned: always
"""

NVIDIA_VENDOR = "0x10de"
_INVALID_FIELD_RE = re.compile(r'Field "([^"]+)" is not a valid field to query', re.I)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def count_nvidia_pci(module, sysfs_root="/sys/bus/pci/devices"):
    """Number of NVIDIA display-class (0x03xxxx) PCI functions, or None when unknowable."""
    if os.path.isdir(sysfs_root):
        count = 0
        for device in glob.glob(os.path.join(sysfs_root, "*")):
            vendor = (_read(os.path.join(device, "vendor")) or "").lower()
            klass = (_read(os.path.join(device, "class")) or "").lower()
            if vendor == NVIDIA_VENDOR and klass.startswith("0x03"):
                count += 1
        return count
    lspci = module.get_bin_path("lspci")
    if not lspci:
        return None
    rc, out, _err = module.run_command([lspci, "-n"])
    if rc != 0:
        return None
    count = 0
    for line in out.splitlines():
        # "01:00.0 0302: 10de:20b2 (rev a1)"
        match = re.match(r"^\S+\s+([0-9a-fA-F]{4}):\s+([0-9a-fA-F]{4}):", line)
        if match and match.group(2).lower() == "10de" and match.group(1).startswith("03"):
            count += 1
    return count


def _parse(text, fmt, fields=None):
    if fmt == "xml":
        return parse_xml(text)
    return parse_query_csv(text, fields)


def _detect_format(text):
    return "xml" if "<nvidia_smi_log" in text else "csv"


def _run_smi(module, smi, fmt):
    """Run nvidia-smi; return (rc, output, fields) with unknown CSV fields dropped and retried."""
    if fmt == "xml":
        rc, out, err = module.run_command([smi, "-q", "-x"])
        return rc, out if rc == 0 else (out + "\n" + err), None
    fields = list(QUERY_FIELDS)
    while True:
        rc, out, err = module.run_command(
            [smi, "--query-gpu=" + ",".join(fields), "--format=csv,nounits"]
        )
        if rc == 0:
            return rc, out, fields
        match = _INVALID_FIELD_RE.search(out + "\n" + err)
        if not match or match.group(1) not in fields or len(fields) <= 1:
            return rc, out + "\n" + err, fields
        fields.remove(match.group(1))


def _facts(parsed, present, status, message, pci_count):
    gpus = parsed["gpus"] if parsed else []
    return {
        "hearth_gpus": gpus,
        "hearth_gpu_driver_version": parsed["driver_version"] if parsed else None,
        "hearth_gpu_cuda_version": parsed["cuda_version"] if parsed else None,
        "hearth_gpu_count": len(gpus),
        "hearth_gpu_present": present,
        "hearth_gpu_status": status,
        "hearth_gpu_message": message,
        "hearth_gpu_pci_devices": pci_count,
    }


def _summary(parsed):
    gpus = parsed["gpus"]
    names = sorted(set(gpu["name"] or "unknown" for gpu in gpus))
    return "%d NVIDIA GPU(s): %s; driver %s, CUDA %s" % (
        len(gpus),
        ", ".join(names),
        parsed["driver_version"],
        parsed["cuda_version"],
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi_path=dict(type="str", required=False),
            format=dict(type="str", choices=["xml", "csv"], default="xml"),
            fixture=dict(type="path", required=False),
            fail_on_error=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    fail_on_error = module.params["fail_on_error"]
    pci_count = count_nvidia_pci(module)

    def finish(parsed, present, status, message, rc=None):
        facts = _facts(parsed, present, status, message, pci_count)
        if status not in ("ok", "absent") and fail_on_error:
            module.fail_json(msg=message, rc=rc, ansible_facts=facts)
        module.exit_json(changed=False, ansible_facts=facts)

    def from_output(text, fmt, fields=None):
        try:
            parsed = _parse(text, fmt, fields)
        except ValueError as exc:
            finish(
                None, True, "parse_error", "could not parse nvidia-smi %s output: %s" % (fmt, exc)
            )
            return
        if not parsed["gpus"]:
            finish(parsed, False, "absent", "nvidia-smi lists no GPU")
            return
        finish(parsed, True, "ok", _summary(parsed))

    fixture = module.params["fixture"]
    if fixture:
        if not os.path.isfile(fixture):
            module.fail_json(msg="fixture %s does not exist" % fixture)
        text = _read(fixture) or ""
        if looks_like_error(text):
            error = classify_error(text, None)
            finish(None, True, error["code"], error["message"])
        from_output(text, _detect_format(text))
        return

    driver_seen = os.path.exists("/proc/driver/nvidia")
    hardware_absent = not driver_seen and not pci_count
    smi = module.params["nvidia_smi_path"] or module.get_bin_path("nvidia-smi")
    if smi and not os.path.exists(smi):
        smi = None
    if not smi:
        if hardware_absent:
            finish(
                None,
                False,
                "absent",
                "no NVIDIA GPU found (no nvidia-smi, no NVIDIA PCI display device)",
            )
        error = classify_error("nvidia-smi: command not found", 127)
        if pci_count:
            seen = "%d NVIDIA PCI display device(s) found" % pci_count
        else:
            seen = "/proc/driver/nvidia exists"
        finish(None, True, error["code"], "%s but %s" % (seen, error["message"]), rc=127)

    fmt = module.params["format"]
    rc, output, fields = _run_smi(module, smi, fmt)
    if rc != 0:
        # A failing nvidia-smi with no NVIDIA device on the bus (e.g. utilities installed on a
        # GPU-less VM) is absence; when the bus could not be read, report the error instead.
        if pci_count == 0 and not driver_seen:
            finish(
                None,
                False,
                "absent",
                "no NVIDIA GPU found (nvidia-smi failed and no NVIDIA PCI display device)",
            )
        error = classify_error(output, rc)
        finish(None, True, error["code"], error["message"], rc=rc)
    from_output(output, fmt, fields)


if __name__ == "__main__":
    main()
