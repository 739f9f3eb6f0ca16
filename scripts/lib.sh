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
  ninja -C "$TOP/$dir" >/dev/null || { ninja -C "$TOP/$dir"; return 1; }
}
