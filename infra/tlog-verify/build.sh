#!/usr/bin/env bash
# Build the independent verifier of the ledger's checkpoints, tiles and proofs (Go's
# golang.org/x/mod/sumdb/note and sumdb/tlog, transparency-dev/merkle, cloudflare/circl);
# `make setup` runs this so tests/interop finds it ready.
#
# Output: $PCVHUB_CACHE_DIR/tlog-verify/<hash>/tlog-verify, <hash> being the SHA-256 of
# this script, go.mod, go.sum and the sources: editing any builds anew, an unchanged tree
# never calls Go. Modules and the build cache live under $PCVHUB_CACHE_DIR/go (GOMODCACHE,
# GOPATH, GOCACHE), so a fresh clone fetches them once from the Go module proxy and a
# rebuild needs no network; go.sum pins every module. PCVHUB_CACHE_DIR defaults to
# <repo>/.cache (ignored by git).
#
# Usage: bash infra/tlog-verify/build.sh      prints the binary's path as its last line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_DIR="${PCVHUB_CACHE_DIR:-$REPO_ROOT/.cache}"

say() { printf '[tlog-verify] %s\n' "$*" >&2; }
die() { printf '[tlog-verify] ERROR: %s\n' "$*" >&2; exit 1; }

HASH="$(cd "$HERE" && find build.sh go.mod go.sum ./*.go -type f \
        | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
OUT="$CACHE_DIR/tlog-verify/$HASH"
BIN="$OUT/tlog-verify"

if [[ -x "$BIN" && -f "$OUT/.complete" ]]; then
  say "verifier already built at $OUT"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "go not found: install Go 1.26 or newer (apt-get install golang-go)"

export GOMODCACHE="$CACHE_DIR/go/mod" GOPATH="$CACHE_DIR/go" GOCACHE="$CACHE_DIR/go/build"
# go.sum is the lock: never rewrite it, never switch toolchains behind the build's back
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local
say "building the verifier into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
LOG="$OUT/go-build.log"
if ! (cd "$HERE" && go build -trimpath -o "$BIN" .) >"$LOG" 2>&1; then
  tail -n 40 "$LOG" >&2
  die "go build failed (log: $LOG): the first build needs the Go module proxy (GOPROXY)"
fi
touch "$OUT/.complete"  # written last: a build killed half-way is never taken as done
find "$CACHE_DIR/tlog-verify" -mindepth 1 -maxdepth 1 -type d ! -name "$HASH" -exec rm -rf {} +
say "built $BIN"
echo "$BIN"
