#!/usr/bin/env bash
# Take a headless-Chromium screenshot of an HTML report, to check that it renders offline.
# Usage: bench/render_report_screenshot.sh REPORT.html [OUT.png] [WIDTH] [HEIGHT]
# Needs Debian's chromium (apt-get install -y chromium). Network is switched off for the page.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 REPORT.html [OUT.png] [WIDTH] [HEIGHT]" >&2
  exit 2
fi
report=$(realpath "$1")
out=${2:-${report%.html}.png}
width=${3:-1280}
height=${4:-2000}
[[ -f "$report" ]] || { echo "error: $report: no such file" >&2; exit 2; }

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then browser=$candidate; break; fi
done
[[ -n "$browser" ]] || { echo "error: no chromium found; install it with: apt-get install -y chromium" >&2; exit 2; }

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
out_abs=$(realpath -m "$out")
mkdir -p "$(dirname "$out_abs")"

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --window-size="${width},${height}" \
  --screenshot="$out_abs" "file://$report" >/dev/null 2>&1

[[ -s "$out_abs" ]] || { echo "error: chromium wrote no screenshot" >&2; exit 1; }
echo "$out_abs"
