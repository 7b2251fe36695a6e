#!/usr/bin/env bash
# Hearth's main job on its embedded default, the local lab: start 3 systemd "bare-metal" hosts,
# converge them with `hearth up`, then audit them with `hearth audit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
hearth lab up --hosts "${HEARTH_LAB_HOSTS:-3}"
hearth check -i inventories/lab/hosts.yml
hearth up -i inventories/lab/hosts.yml
hearth audit -i inventories/lab/hosts.yml --format html --output reports/audit.html
hearth audit -i inventories/lab/hosts.yml
echo "The lab stays up: 'hearth lab status', 'hearth lab down'. HTML report: reports/audit.html"
