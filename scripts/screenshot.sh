#!/usr/bin/env bash
# Renders the status page of a local demo cluster to docs/status-page.png.
#
#   make screenshot            (builds first; not part of CI)
#
# Starts bin/authority-local (3 authorityd on 127.0.0.1:900{1,2,3}, a seeded
# demo domain "orders" with one denied promotion) on a fresh data dir, waits
# until the demo is seeded and the status page answers, screenshots the
# leader's page (it alone shows lease remaining times) with headless
# Chromium, and stops the cluster with SIGTERM.
#
# Environment: BIN (bin), DATA (.data/screenshot), OUT (docs/status-page.png),
# CHROMIUM (chromium), SIZE (1400,1800).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DATA=${DATA:-.data/screenshot}
OUT=${OUT:-docs/status-page.png}
CHROMIUM=${CHROMIUM:-chromium}
SIZE=${SIZE:-1400,1800}

command -v "$CHROMIUM" >/dev/null || { echo "screenshot: $CHROMIUM not found (Debian: apt-get install chromium)" >&2; exit 1; }
[ -x "$BIN/authority-local" ] || { echo "screenshot: $BIN/authority-local missing; run make build" >&2; exit 1; }

rm -rf "$DATA"
mkdir -p "$DATA" "$(dirname "$OUT")"
log="$DATA/authority-local.out"
profile=$(mktemp -d)
"$BIN/authority-local" -bin "$BIN" -data "$DATA" >"$log" 2>&1 &
local_pid=$!

cleanup() {
	if kill -0 "$local_pid" 2>/dev/null; then
		kill -TERM "$local_pid"
		for _ in $(seq 1 100); do kill -0 "$local_pid" 2>/dev/null || break; sleep 0.1; done
	fi
	wait "$local_pid" 2>/dev/null || true
	rm -rf "$profile"
}
trap cleanup EXIT

# The HTTP port needs a client certificate (mutual TLS): curl fetches the
# page with the reader's certificate and Chromium renders the saved copy
# (the page is self-contained: inline CSS, no scripts).
certs="$DATA/certs"
tlscurl() { curl -fsS --cacert "$certs/ca.crt" --cert "$certs/reader-viewer.crt" --key "$certs/reader-viewer.key" "$@"; }

# The demo is seeded once authority-local prints its Ctrl-C hint.
for i in $(seq 1 600); do
	grep -q 'Press Ctrl-C' "$log" && break
	if ! kill -0 "$local_pid" 2>/dev/null; then
		echo "screenshot: authority-local exited:" >&2; cat "$log" >&2; exit 1
	fi
	[ "$i" -eq 600 ] && { echo "screenshot: cluster not ready within 60 s:" >&2; cat "$log" >&2; exit 1; }
	sleep 0.1
done
for i in $(seq 1 100); do
	tlscurl -o /dev/null https://127.0.0.1:9001/ && break
	[ "$i" -eq 100 ] && { echo "screenshot: https://127.0.0.1:9001/ does not answer" >&2; exit 1; }
	sleep 0.1
done

# /readyz answers "ok leader=sN applied_index=…"; server sN serves HTTP on 900N.
url=https://127.0.0.1:9001/
leader=$(tlscurl https://127.0.0.1:9001/readyz | sed -n 's/.*leader=s\([0-9]\).*/\1/p')
[ -n "$leader" ] && url="https://127.0.0.1:900$leader/"
echo "screenshot: $url -> $OUT"
tlscurl -o "$DATA/page.html" "$url"

"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync \
	--hide-scrollbars --user-data-dir="$profile" --window-size="$SIZE" \
	--screenshot="$OUT" "file://$(realpath "$DATA")/page.html" >"$DATA/chromium.out" 2>&1 || { cat "$DATA/chromium.out" >&2; exit 1; }
[ -s "$OUT" ] || { echo "screenshot: $OUT was not written" >&2; cat "$DATA/chromium.out" >&2; exit 1; }
echo "screenshot: wrote $OUT"
