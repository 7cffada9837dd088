#!/usr/bin/env bash
# Installs the system programs the test suite needs, when they are missing and we are root.
# Each entry is "command-to-look-for:debian-package". Later features (browser tests, the
# PostgreSQL queue) add their entries here; tests that need a program skip with a clear reason
# when it could not be installed.
set -euo pipefail
REQUIRED=(
  "/usr/lib/postgresql/15/bin/initdb:postgresql"   # tests start a real PostgreSQL server (job queue, two workers)
  "/usr/bin/chromium:chromium"                      # browser tests of the review UI (Playwright drives it)
)
missing=()
for entry in "${REQUIRED[@]+"${REQUIRED[@]}"}"; do
  cmd=${entry%%:*}; pkg=${entry#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]} and not root; the tests that need them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
