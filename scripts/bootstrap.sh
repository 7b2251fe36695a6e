#!/usr/bin/env bash
# Prepare this machine to run Hearth and its lab: Docker engine, debootstrap, zstd, a Python venv
# with Hearth and its dev tools, and the pinned Ansible collections. Safe to run again: it only
# installs what is missing. Works on a fresh Debian 12 / Ubuntu 22.04+ machine as root, and on a
# machine that already has Docker (docker.io or Docker CE).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v ssh >/dev/null || need_pkgs+=(openssh-client)
command -v git >/dev/null || need_pkgs+=(git)
command -v curl >/dev/null || need_pkgs+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# The monitoring tests: promtool (prometheus), amtool (prometheus-alertmanager), and npm for
# checking Grafana dashboards against @grafana/schema. Only the tools are wanted: their services
# are stopped and disabled below when this script installed them.
new_monitoring_services=()
command -v promtool >/dev/null || { need_pkgs+=(prometheus); new_monitoring_services+=(prometheus); }
command -v amtool >/dev/null || { need_pkgs+=(prometheus-alertmanager); new_monitoring_services+=(prometheus-alertmanager); }
command -v npm >/dev/null || need_pkgs+=(npm)
# The audit's HTML report is checked in a real headless browser (tests/unit/test_audit_html.py).
command -v chromium >/dev/null || need_pkgs+=(chromium)
if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  need_pkgs+=(docker.io)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get -o Acquire::Retries=3 update -qq
  as_root apt-get -o Acquire::Retries=3 install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if [ ${#new_monitoring_services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now "${new_monitoring_services[@]}" >/dev/null 2>&1 || true
  fi
fi

if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  if [ -d /run/systemd/system ] && as_root systemctl start docker 2>/dev/null; then :; else
    as_root bash -c 'setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/dockerd.log" >&2; exit 6; }
fi

stamp=.venv/.hearth-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating the Python environment (.venv)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import hearth, ansible_runner, testinfra'
  echo "$want" > "$stamp"
fi

# The front door's own dependencies (its image pins the same wheels), for its unit tests and mypy.
frontdoor_reqs=templates/images/frontdoor/requirements.txt
frontdoor_stamp=.venv/.hearth-frontdoor-installed
frontdoor_want=$(sha256sum "$frontdoor_reqs" | cut -c1-16)
if [ "$(cat "$frontdoor_stamp" 2>/dev/null)" != "$frontdoor_want" ]; then
  say "installing the front door's pinned dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r "$frontdoor_reqs"
  echo "$frontdoor_want" > "$frontdoor_stamp"
fi

collections_status=$(.venv/bin/hearth collections list)
if grep -q '✗' <<<"$collections_status"; then
  say "installing the pinned Ansible collections (from the ansible wheel on PyPI, no Galaxy)"
  .venv/bin/hearth collections install
fi
