# Shared by scripts/test, scripts/demo and scripts/bench.  Sourced, not run.
# shellcheck shell=bash

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian 12 packages the project needs to build, test and benchmark
# (clang + its runtime libraries: the libFuzzer targets, tests/fuzz/).
SHARDVM_PACKAGES=(
  meson ninja-build pkg-config gcc g++ python3
  libglib2.0-dev liburcu-dev libaio-dev liburing-dev libjson-glib-dev
  googletest libgtest-dev
  libuv1-dev libevent-dev gnuplot-nox
  qemu-system-x86 binutils fio
  clang libclang-rt-14-dev
)

# ensure_packages: apt-get install whatever of SHARDVM_PACKAGES is missing.
# Quick (one dpkg-query) when everything is present.
ensure_packages() {
  local missing=() p
  for p in "${SHARDVM_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "shardvm: installing ${missing[*]}" >&2
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || return 1
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || return 1
}

# ensure_build DIR [meson options...]: configure DIR once, then build it.
ensure_build() {
  local dir=$1; shift
  if [ ! -f "$TOP/$dir/build.ninja" ]; then
    meson setup "$TOP/$dir" "$TOP" "$@" >/dev/null || return 1
  else
    # Test and module folders are picked up at configure time: a folder
    # added since this dir was configured needs a reconfigure (~1 s).
    meson setup --reconfigure "$TOP/$dir" "$TOP" "$@" >/dev/null || return 1
  fi
  ninja -C "$TOP/$dir" $(suite_targets "$dir") >/dev/null ||
    { ninja -C "$TOP/$dir" $(suite_targets "$dir"); return 1; }
}

# suite_targets DIR: with BUILD_SUITES="s1 s2 ..." set, the ninja targets the
# tests of those suites need (their programs and what they depend on, from
# meson introspect), so a TSan build compiles 34 of its 85 targets; without
# it, nothing (ninja builds everything).
suite_targets() {
  [ -n "${BUILD_SUITES:-}" ] || return 0
  python3 - "$TOP/$1" "$BUILD_SUITES" <<'PY'
import json, os, subprocess, sys
d, suites = sys.argv[1], set(sys.argv[2].split())
intro = lambda what: json.loads(subprocess.check_output(['meson', 'introspect', what, d]))
byid = {t['id']: t for t in intro('--targets')}
need = set()
for t in intro('--tests'):
    if any(s.split(':')[-1] in suites for s in t['suite']):
        for dep in t['depends']:
            need.update(os.path.relpath(f, d) for f in byid[dep]['filename'])
print(' '.join(sorted(need)))
PY
}

# ---- libFuzzer targets (tests/fuzz/, docs/testing.md) --------------------
FUZZ_TARGETS=(fuzz-virtio-blk fuzz-virtio-blk-io fuzz-virtio-pci fuzz-cmdline fuzz-qmp)
FUZZ_DIR=build-fuzz

# fuzz_build: configure build-fuzz/ with clang once, build the targets.
fuzz_build() {
  if [ ! -f "$TOP/$FUZZ_DIR/build.ninja" ]; then
    CC=clang CXX=clang++ meson setup "$TOP/$FUZZ_DIR" "$TOP" -Dfuzz=enabled \
      -Dtests=disabled -Dbench=disabled -Dwerror=false \
      -Db_sanitize=address,undefined -Db_lundef=false \
      -Doptimization=1 "-Dc_args=-fno-sanitize-recover=all -gline-tables-only" \
      "-Dcpp_args=-fno-sanitize-recover=all -gline-tables-only" \
      >/dev/null || return 1
  fi
  ninja -C "$TOP/$FUZZ_DIR" "${FUZZ_TARGETS[@]/#/tests/fuzz/}" >/dev/null ||
    { ninja -C "$TOP/$FUZZ_DIR" "${FUZZ_TARGETS[@]/#/tests/fuzz/}"; return 1; }
}

# fuzz_run TARGET SECONDS [libFuzzer flags...]: fuzz TARGET for SECONDS from
# tests/fuzz/corpus/TARGET plus build-fuzz/fuzz-corpus/TARGET (which keeps
# what it finds).  Prints one line with the inputs run and the coverage;
# returns non-zero on a crash, sanitizer report, failed check, timeout (10 s
# per input) or RSS above 3 GiB, the input kept in
# build-fuzz/fuzz-crashes/TARGET-crash-<sha1>, the log in build-fuzz/fuzz-logs/.
# -detect_leaks=0: no leak scan after each input that allocated more than it
# freed (caches and RCU-deferred frees make that most inputs: 4x slower);
# LeakSanitizer still checks the whole run at exit.  -close_fd_mask=2:
# virtio_error() logs every broken device; libFuzzer's report still shows.
fuzz_run() {
  local t=$1 secs=$2 d="$TOP/$FUZZ_DIR" log cov dict=(); shift 2
  # tests/fuzz/TARGET.dict: tokens (option names, commands) to splice in.
  [ -f "$TOP/tests/fuzz/$t.dict" ] && dict=(-dict="$TOP/tests/fuzz/$t.dict")
  mkdir -p "$d/fuzz-corpus/$t" "$d/fuzz-crashes" "$d/fuzz-logs"
  log="$d/fuzz-logs/$t.log"
  if ASAN_OPTIONS=abort_on_error=0:halt_on_error=1 \
     "$d/tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
       -rss_limit_mb=3072 -close_fd_mask=2 -print_final_stats=1 -detect_leaks=0 \
       -artifact_prefix="$d/fuzz-crashes/$t-" "${dict[@]}" "$@" \
       "$d/fuzz-corpus/$t" "$TOP/tests/fuzz/corpus/$t" >"$log" 2>&1; then
    cov=$(grep -o 'DONE *cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1 | sed 's/DONE *//')
    echo "fuzz $t: OK, $(grep -o 'number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') inputs in $secs s ($cov)"
  else
    echo "fuzz $t: FAILED (log $log; input kept in $FUZZ_DIR/fuzz-crashes/)" >&2
    grep -E 'ERROR|check failed|SUMMARY|Test unit written' "$log" | head -5 >&2
    return 1
  fi
}
