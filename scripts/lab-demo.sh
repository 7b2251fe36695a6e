#!/usr/bin/env bash
# Hearth's main job on its embedded default, the local lab: start 3 systemd "bare-metal" hosts,
# converge them with `hearth up` (base, GPU, inference, monitoring layers), audit them with
# `hearth audit`, then ask the lab's real model (SmolLM2-135M-Instruct on llama.cpp, inside lab1)
# a question through the front door with the lab's API key, and show that a request without a
# key is refused.
set -euo pipefail
# As root, or it re-runs itself with sudo (keeping the HEARTH_* settings); no sudo needed as root.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: run it as root (sudo is not installed)" >&2; exit 6; }
  mapfile -t hearth_env < <(env | grep '^HEARTH_' || true)
  exec sudo env "${hearth_env[@]}" bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

lab_id="${HEARTH_LAB_ID:-0}"
suffix=""
[ "$lab_id" = 0 ] || suffix="-$lab_id"
inventory="inventories/lab$suffix/hosts.yml"
state="${HEARTH_HOME:-$HOME/.local/share/hearth}/lab$suffix"

hearth lab up --hosts "${HEARTH_LAB_HOSTS:-3}"
# The lab's API key lives vault-encrypted in the inventory (group_vars/frontdoor/vault.yml);
# `hearth lab up` keeps its vault password (and the key, for this demo) in $state, mode 0600.
vault=(--vault-password-file "$state/vault-password")
hearth check -i "$inventory" "${vault[@]}"
hearth up -i "$inventory" "${vault[@]}"
hearth audit -i "$inventory" "${vault[@]}" --format html --output reports/audit.html
hearth audit -i "$inventory" "${vault[@]}"

address=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["hosts"][0]["address"])' \
  "$state/lab.json")
url="http://$address:8090/v1/chat/completions"
question='{"model": "smollm2", "max_tokens": 64, "temperature": 0, "messages": [
  {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
  {"role": "user", "content": "What is the capital of France?"}]}'

echo "The lab stays up: 'hearth lab status', 'hearth lab down'. HTML report: reports/audit.html"
echo
echo "==> POST $url without an API key:"
curl -sS -o /dev/null -w 'HTTP %{http_code}\n' "$url" -H 'Content-Type: application/json' \
  -d "$question"
echo "==> POST $url with the lab's API key ($state/api-key):"
curl -sS --fail-with-body "$url" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $(cat "$state/api-key")" -d "$question" \
  | python -c 'import json, sys
r = json.load(sys.stdin)
print(r["model"], "answered in", r["usage"]["completion_tokens"], "tokens:")
print(r["choices"][0]["message"]["content"].strip())'
