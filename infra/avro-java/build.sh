#!/usr/bin/env bash
# Build the Java reference reader (Apache Avro for Java) that tests/interop runs over
# records the hub wrote; `make setup` runs this so the test finds it ready.
#
# Output: $PCVHUB_CACHE_DIR/avro-java/<hash>/avro-java-reader.jar, with its dependency jars
# in lib/ beside it (the jar's manifest names them). <hash> is the SHA-256 of this script,
# the pom and the Java sources, so editing any builds anew and an unchanged tree never
# calls Maven.
# Maven's downloads go to $PCVHUB_CACHE_DIR/m2 (shared with the Kafka jars); once they are
# there, a rebuild needs no network. PCVHUB_CACHE_DIR defaults to <repo>/.cache (ignored).
#
# Usage: bash infra/avro-java/build.sh        prints the jar's path as its last line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
CACHE_DIR="${PCVHUB_CACHE_DIR:-$REPO_ROOT/.cache}"

say() { printf '[avro-java] %s\n' "$*" >&2; }
die() { printf '[avro-java] ERROR: %s\n' "$*" >&2; exit 1; }

# Sorted paths relative to HERE, so the hash does not depend on where the clone lives.
HASH="$(cd "$HERE" && find build.sh pom.xml src -type f | LC_ALL=C sort | xargs sha256sum \
        | sha256sum | cut -c1-16)"
OUT="$CACHE_DIR/avro-java/$HASH"
JAR="$OUT/avro-java-reader.jar"

if [[ -f "$JAR" && -f "$OUT/.complete" ]]; then
  say "reader already built at $OUT"
  echo "$JAR"
  exit 0
fi

command -v java >/dev/null || die "java not found: apt-get install openjdk-17-jdk-headless"
command -v mvn >/dev/null  || die "Maven (mvn) not found: apt-get install maven"

say "building the reader (Apache Avro for Java) into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
BUILD_DIR="$OUT/build"
LOG="$OUT/maven.log"
# The whole Maven log goes to a file and is shown only if the build fails.
if ! mvn -B -f "$HERE/pom.xml" \
    "-Dmaven.repo.local=$CACHE_DIR/m2" \
    "-Dreader.build.dir=$BUILD_DIR" \
    package >"$LOG" 2>&1; then
  tail -n 40 "$LOG" >&2
  die "Maven could not build the reader (log: $LOG): the first build needs Maven Central (proxy settings in ~/.m2/settings.xml)"
fi
mv "$BUILD_DIR/avro-java-reader.jar" "$JAR"
mv "$BUILD_DIR/lib" "$OUT/lib"
rm -rf "$BUILD_DIR"
touch "$OUT/.complete"  # written last: a build killed half-way is never taken as done
# Builds of earlier sources are of no further use.
find "$CACHE_DIR/avro-java" -mindepth 1 -maxdepth 1 -type d ! -name "$HASH" -exec rm -rf {} +
say "built $JAR"
echo "$JAR"
