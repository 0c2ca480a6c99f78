#!/usr/bin/env bash
# Build liboqs (C) as a shared library for the archive-signature backend
# (pcvhub/trust/archive.py, via liboqs-python).
#
# Why this script exists: liboqs-python only ships the Python wrapper. When it cannot find
# liboqs.so it tries to `git clone` liboqs from GitHub at *import* time, which our machines
# cannot reach (and which we never want to happen silently). So we build liboqs ourselves,
# from the sources that the crates.io crate `oqs-sys` vendors in its `liboqs/` folder, since
# crates.io is a registry our machines and CI do reach.
#
# Output: $PCVHUB_CACHE_DIR/liboqs/install/lib/liboqs.so (PCVHUB_CACHE_DIR defaults to
# <repo>/.cache, which git ignores). Idempotent: a matching stamp file makes it a no-op.
#
# Usage (from anywhere): bash infra/liboqs/build.sh      (`make setup` runs it)
set -euo pipefail

# --- What we build -------------------------------------------------------------------------
# oqs-sys 0.11.0 is the newest published oqs-sys; it vendors liboqs 0.13.0. liboqs-python is
# 0.16, so it warns about the (major, minor) mismatch. Checked for 0.13: the OQS_SIG and OQS_KEM
# struct layouts liboqs-python mirrors are identical, and of the functions it calls only one
# is missing (see COMPAT below). Stateful signatures (XMSS/LMS) are not built or used.
OQS_SYS_VERSION="0.11.0+liboqs-0.13.0"
LIBOQS_VERSION="0.13.0"
# Only the algorithms pcvhub uses, to keep the build short on CI's 2 cores:
# SPHINCS+-SHA2-128s-simple (archive seals; liboqs 0.13 has no FIPS 205 "SLH-DSA" names yet),
# ML-DSA-65 (FIPS 204; the hub's event-signature algorithm, available here too) and
# ML-KEM-768 (cheap to keep).
OQS_ALGS="SIG_sphincs_sha2_128s_simple;SIG_ml_dsa_65;KEM_ml_kem_768"
JOBS=2

# --- Where -----------------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${PCVHUB_CACHE_DIR:-$REPO_ROOT/.cache}"
WORK="$CACHE_DIR/liboqs"
INSTALL="$WORK/install"
CRATE="$WORK/oqs-sys-$OQS_SYS_VERSION.crate"
SRC="$WORK/src/oqs-sys-$OQS_SYS_VERSION"
WRAPPER="$WORK/wrapper-$LIBOQS_VERSION"
BUILD="$WORK/build-$LIBOQS_VERSION"
STAMP="$INSTALL/.pcvhub-liboqs-stamp"
# Everything that changes the result is in the stamp, so editing any of it triggers a rebuild.
STAMP_TEXT="oqs-sys=$OQS_SYS_VERSION liboqs=$LIBOQS_VERSION algs=$OQS_ALGS compat=1"

say() { printf '[liboqs] %s\n' "$*"; }
die() { printf '[liboqs] ERROR: %s\n' "$*" >&2; exit 1; }

# --- Fast path -------------------------------------------------------------------------------
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]] && compgen -G "$INSTALL/lib/liboqs.so*" >/dev/null; then
  say "liboqs $LIBOQS_VERSION already built at $INSTALL"
  exit 0
fi

# --- Tools -------------------------------------------------------------------------------------
command -v curl >/dev/null      || die "curl not found: apt-get install curl"
command -v sha256sum >/dev/null || die "sha256sum not found: apt-get install coreutils"
command -v tar >/dev/null       || die "tar not found: apt-get install tar"
command -v python3 >/dev/null   || die "python3 not found (used to read the crates.io index): apt-get install python3"
command -v cmake >/dev/null     || die "cmake not found: apt-get install cmake"
command -v cc >/dev/null || command -v gcc >/dev/null || die "no C compiler found: apt-get install gcc"
GENERATOR=()
if command -v ninja >/dev/null; then GENERATOR=(-G Ninja); fi  # faster; make works too

START=$SECONDS
mkdir -p "$WORK"

# --- Source: the oqs-sys crate, checked against crates.io's published checksum ---------------
# A .crate is a gzipped tarball. The sparse index has one JSON line per published version,
# whose `cksum` is the sha256 of the .crate file.
crate_url="https://static.crates.io/crates/oqs-sys/oqs-sys-${OQS_SYS_VERSION//+/%2B}.crate"
index_url="https://index.crates.io/oq/s-/oqs-sys"

say "reading the published checksum of oqs-sys $OQS_SYS_VERSION from $index_url"
index="$(curl -fsSL --retry 3 --max-time 60 "$index_url")" \
  || die "cannot read $index_url (is crates.io reachable? check network/proxy settings)"
expected="$(OQS_SYS_VERSION="$OQS_SYS_VERSION" python3 -c '
import json, os, sys
want = os.environ["OQS_SYS_VERSION"]
for line in sys.stdin:
    if line.strip():
        entry = json.loads(line)
        if entry["vers"] == want:
            print(entry["cksum"])
' <<<"$index")"
[[ -n "$expected" ]] || die "oqs-sys $OQS_SYS_VERSION is not listed in $index_url (update OQS_SYS_VERSION in $0)"

if [[ -f "$CRATE" ]] && [[ "$(sha256sum "$CRATE" | cut -d' ' -f1)" == "$expected" ]]; then
  say "using cached $CRATE"
else
  say "downloading oqs-sys $OQS_SYS_VERSION (~16 MB)"
  curl -fsSL --retry 3 --max-time 600 -o "$CRATE.part" "$crate_url" \
    || die "download failed: $crate_url (is crates.io reachable?)"
  actual="$(sha256sum "$CRATE.part" | cut -d' ' -f1)"
  if [[ "$actual" != "$expected" ]]; then
    rm -f "$CRATE.part"
    die "checksum mismatch for oqs-sys $OQS_SYS_VERSION: got $actual, crates.io publishes $expected; refusing to build (retry; if it persists, investigate before going on)"
  fi
  mv "$CRATE.part" "$CRATE"
fi
say "sha256 ok ($expected)"

# Always extract afresh, so a half-extracted tree from an interrupted run cannot linger.
rm -rf "$SRC"
mkdir -p "$WORK/src"
tar -xzf "$CRATE" -C "$WORK/src" "oqs-sys-$OQS_SYS_VERSION/liboqs"
[[ -f "$SRC/liboqs/CMakeLists.txt" ]] || die "the crate has no liboqs/CMakeLists.txt; oqs-sys changed its layout"
vendored="$(sed -n 's/^set(OQS_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))$/\2/p' "$SRC/liboqs/CMakeLists.txt" | paste -sd.)"
[[ "$vendored" == "$LIBOQS_VERSION" ]] \
  || die "the crate vendors liboqs '$vendored', not $LIBOQS_VERSION; update LIBOQS_VERSION in $0"

# --- COMPAT: liboqs-python 0.16 vs liboqs 0.13 -------------------------------------------------
# liboqs-python 0.16 looks up OQS_SIG_supports_ctx_str at import time; liboqs only gained it
# after 0.13, so `import oqs` would fail with "undefined symbol". We compile a small
# implementation of it (written here, from the documented semantics: "does this algorithm
# support signing with a context string") into liboqs. We add it through a wrapper CMake
# project so the vendored sources stay untouched, and only when the vendored header lacks it.
rm -rf "$WRAPPER"
mkdir -p "$WRAPPER"
compat_line=""
if ! grep -q "OQS_SIG_supports_ctx_str" "$SRC/liboqs/src/sig/sig.h"; then
  cat >"$WRAPPER/pcvhub_oqs_compat.c" <<'EOF'
/* pcvhub: functions liboqs-python 0.16 expects that this liboqs version lacks. */
#include <stdbool.h>
#include <oqs/oqs.h>

/* True if alg_name is an enabled signature algorithm that accepts a context string. */
OQS_API bool OQS_SIG_supports_ctx_str(const char *alg_name) {
	OQS_SIG *sig = OQS_SIG_new(alg_name);
	if (sig == NULL) {
		return false;
	}
	bool supported = sig->sig_with_ctx_support;
	OQS_SIG_free(sig);
	return supported;
}
EOF
  compat_line='target_sources(oqs PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/pcvhub_oqs_compat.c")'
fi
cat >"$WRAPPER/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.18)
project(pcvhub_liboqs C ASM)
add_subdirectory("$SRC/liboqs" liboqs)
$compat_line
EOF

# --- Configure, build, install ---------------------------------------------------------------
# OQS_USE_OPENSSL=OFF: liboqs' own SHA-2/AES keep the library free of a libcrypto dependency.
# CMAKE_INSTALL_LIBDIR=lib: liboqs-python looks in <prefix>/lib (Debian would not pick lib64,
# but other distributions do).
say "configuring (algorithms: $OQS_ALGS)"
rm -rf "$BUILD"
if ! cmake -S "$WRAPPER" -B "$BUILD" "${GENERATOR[@]}" \
      -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_SHARED_LIBS=ON \
      -DOQS_BUILD_ONLY_LIB=ON \
      -DOQS_USE_OPENSSL=OFF \
      -DOQS_MINIMAL_BUILD="$OQS_ALGS" \
      -DCMAKE_INSTALL_PREFIX="$INSTALL" \
      -DCMAKE_INSTALL_LIBDIR=lib \
      >"$WORK/configure.log" 2>&1; then
  tail -n 30 "$WORK/configure.log" >&2
  die "cmake configure failed (full log: $WORK/configure.log); needs cmake >= 3.18 and a C compiler: apt-get install cmake gcc"
fi

say "compiling with $JOBS jobs (about 15-30 s)"
if ! cmake --build "$BUILD" --parallel "$JOBS" >"$WORK/build.log" 2>&1; then
  tail -n 30 "$WORK/build.log" >&2
  die "build failed (full log: $WORK/build.log); check the compiler: apt-get install gcc"
fi

say "installing into $INSTALL"
rm -rf "$INSTALL"
if ! cmake --install "$BUILD" >"$WORK/install.log" 2>&1; then
  tail -n 30 "$WORK/install.log" >&2
  die "install failed (full log: $WORK/install.log)"
fi
compgen -G "$INSTALL/lib/liboqs.so*" >/dev/null || die "install finished but $INSTALL/lib/liboqs.so is missing"

# Sources and objects are not reused (each build starts clean), so free the disk; the
# verified .crate stays, so a rebuild needs no download.
rm -rf "$SRC" "$BUILD" "$WRAPPER"
rmdir "$WORK/src" 2>/dev/null || true

# The stamp is written last: its presence means the install is complete.
printf '%s' "$STAMP_TEXT" >"$STAMP"
say "liboqs $LIBOQS_VERSION built at $INSTALL in $((SECONDS - START))s"
