#!/usr/bin/env bash
# Regenerate docs/report-example.png: screen the shipped examples, render the coordinator report, and
# photograph it with headless Chromium (Debian: apt-get install chromium). The browser is kept off the
# network (a dead proxy, no host resolution): the page is self-contained and must not need it.
#
#   bash scripts/report_screenshot.sh [TRIAL]      (default: the default trial)
set -euo pipefail
cd "$(dirname "$0")/.."
trial="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=(screen examples/patients --as-of 2026-06-15 --out "$work/result.json" --report "$work/report.html")
[[ -n "$trial" ]] && args+=(--trial "$trial")
.venv/bin/fhir-adapter "${args[@]}" 2>/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --proxy-server=http://127.0.0.1:9 --host-resolver-rules="MAP * ~NOTFOUND" \
  --user-data-dir="$work/profile" --window-size=1280,1900 \
  --screenshot="$PWD/docs/report-example.png" "file://$work/report.html" 2>/dev/null
echo "wrote docs/report-example.png" >&2
