#!/usr/bin/env bash
# Build the independent witness the ledger's interop tests run against: litewitness and
# witnessctl of filippo.io/torchwood v0.6.1 (c2sp.org/tlog-witness; SQLite state in pure
# Go; its Ed25519 key in an ssh-agent). `make setup` runs this, beside infra/tlog-verify.
#
# Output: $PCVHUB_CACHE_DIR/litewitness/<hash>/{litewitness,witnessctl}, <hash> being the
# SHA-256 of this script, go.mod, go.sum and tools.go: editing any builds anew, an
# unchanged tree never calls Go. Modules and the build cache are shared with tlog-verify
# under $PCVHUB_CACHE_DIR/go; go.sum pins every module. The first build fetches them from
# the Go module proxy and compiles SQLite's Go translation (about 2 minutes).
#
# Usage: bash infra/litewitness/build.sh      prints the binaries' folder as its last line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_DIR="${PCVHUB_CACHE_DIR:-$REPO_ROOT/.cache}"

say() { printf '[litewitness] %s\n' "$*" >&2; }
die() { printf '[litewitness] ERROR: %s\n' "$*" >&2; exit 1; }

HASH="$(cd "$HERE" && find build.sh go.mod go.sum tools.go -type f \
        | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
OUT="$CACHE_DIR/litewitness/$HASH"

if [[ -x "$OUT/litewitness" && -x "$OUT/witnessctl" && -f "$OUT/.complete" ]]; then
  say "already built at $OUT"
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || die "go not found: install Go 1.26 or newer (apt-get install golang-go)"

export GOMODCACHE="$CACHE_DIR/go/mod" GOPATH="$CACHE_DIR/go" GOCACHE="$CACHE_DIR/go/build"
export GOFLAGS=-mod=readonly GOTOOLCHAIN=local
say "building litewitness and witnessctl into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
LOG="$OUT/go-build.log"
for tool in litewitness witnessctl; do
  if ! (cd "$HERE" && go build -trimpath -o "$OUT/$tool" "filippo.io/torchwood/cmd/$tool") \
       >>"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    die "go build of $tool failed (log: $LOG): the first build needs the Go module proxy"
  fi
done
touch "$OUT/.complete"  # written last: a build killed half-way is never taken as done
find "$CACHE_DIR/litewitness" -mindepth 1 -maxdepth 1 -type d ! -name "$HASH" -exec rm -rf {} +
say "built $OUT"
echo "$OUT"
