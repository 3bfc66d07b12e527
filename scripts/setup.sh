#!/usr/bin/env bash
# Installs what dcnet's build, tests, demo and benchmarks need, and only what is missing.
# Idempotent and silent when everything is present, so `make test` and `make demo` run it
# every time. Needs root (apt, network namespaces, BPF).
set -euo pipefail

# Debian packages: iproute2 and bpftool for inspecting what tests build; the DNS, overlay and
# load-balancing benchmarks run these peers side by side with dcnet.
# etcd-server is the consensus peer of the scheduler benchmark; curl, python3 and util-linux's setpriv are what the security tests attack with and run as tasks.
# runc and podman run container apps (podman's store holds the images); the test image is
# made from busybox-static. openssl makes the RSA keys of the DC/OS service-account tests;
# zookeeper (with its Java runtime) is where the DNS tests' Mesos masters register.
# containernetworking-plugins are the reference CNI plugins dcnet-cni is chained with.
# chromium is the browser the dashboard's tests drive (through Playwright, below).
DEB_PACKAGES=(
  iproute2 iputils-ping bpftool iptables nftables tcpdump curl python3 python3-venv util-linux
  dnsutils knot-dnsutils dnsperf knot
  iperf3 haproxy hyperfine wrk etcd-server
  runc podman busybox-static openssl zookeeper containernetworking-plugins chromium
)
# bpf-linker links the eBPF programs; it must be built against the LLVM of the nightly toolchain
# that compiles them (rustc emits that LLVM's bitcode).
BPF_LINKER_VERSION=0.13.0
# The Marathon client library the /v2 API is tested with (PyPI), in a venv of its own.
MARATHON_PY_VERSION=0.13.0
# Playwright's Python package (PyPI) drives Debian's chromium in the dashboard's browser tests;
# its own browser downloads are never used.
PLAYWRIGHT_VERSION=1.65.2
NIGHTLY=nightly

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: tests and the demo create network namespaces and load BPF programs"
command -v rustup >/dev/null || die "rustup is missing; install Rust with rustup first (https://rustup.rs)"

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

rustup toolchain list | grep -q "^${NIGHTLY}" || {
  say "installing the ${NIGHTLY} toolchain"
  rustup toolchain install "$NIGHTLY" --profile minimal >/dev/null
}
rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src' || {
  say "adding rust-src to the ${NIGHTLY} toolchain (eBPF builds core with -Z build-std)"
  rustup component add rust-src --toolchain "$NIGHTLY" >/dev/null
}

sysroot=$(rustc +"$NIGHTLY" --print sysroot)
libllvm=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1)
[ -n "$libllvm" ] || die "no libLLVM.so.* in $sysroot/lib: the ${NIGHTLY} toolchain lacks its LLVM library"
llvm_major=$(rustc +"$NIGHTLY" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')

# A working bpf-linker of the pinned version that loads this toolchain's libLLVM is kept as is.
linker_ok() {
  command -v bpf-linker >/dev/null || return 1
  bpf-linker --version 2>/dev/null | grep -q " ${BPF_LINKER_VERSION}\$" || return 1
  ldd "$(command -v bpf-linker)" | grep -qF "$libllvm"
}
if ! linker_ok; then
  say "building bpf-linker ${BPF_LINKER_VERSION} against the ${NIGHTLY} toolchain's LLVM ${llvm_major} (about 2 minutes)"
  prefix="${XDG_CACHE_HOME:-$HOME/.cache}/dcnet/llvm-${llvm_major}"
  mkdir -p "$prefix/lib"
  ln -sfn "$libllvm" "$prefix/lib/libLLVM.so"
  # The rpath lets bpf-linker find libLLVM when rustc runs it, without LD_LIBRARY_PATH.
  LLVM_PREFIX="$prefix" RUSTFLAGS="-C link-arg=-Wl,-rpath,$sysroot/lib" \
    cargo +"$NIGHTLY" install --quiet --force --locked bpf-linker --version "$BPF_LINKER_VERSION" \
      --no-default-features --features "llvm-${llvm_major}" \
    || die "building bpf-linker failed (see the cargo output above)"
  linker_ok || die "bpf-linker was built but does not run against $libllvm"
fi

# marathon-python in a venv (tests/src/clients.rs finds it here): what users script Marathon with.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/dcnet/venv"
if ! "$venv/bin/python" -c "import marathon, importlib.metadata as m; assert m.version('marathon') == '${MARATHON_PY_VERSION}'" 2>/dev/null; then
  say "installing marathon-python ${MARATHON_PY_VERSION} into $venv"
  py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  "$py" -m venv "$venv" || die "creating the venv $venv failed (apt install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "marathon==${MARATHON_PY_VERSION}" \
    || die "pip install marathon==${MARATHON_PY_VERSION} failed"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m; assert m.version('playwright') == '${PLAYWRIGHT_VERSION}'" 2>/dev/null; then
  say "installing playwright ${PLAYWRIGHT_VERSION} into $venv (it drives /usr/bin/chromium)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "playwright==${PLAYWRIGHT_VERSION}" \
    || die "pip install playwright==${PLAYWRIGHT_VERSION} failed"
fi

# cnitool (libcni 1.2.3, third_party/cni) drives dcnet-cni as containerd and podman do. It needs
# Go 1.21 or later: Debian's golang-go where it is that new, else bookworm-backports' 1.22.
go_bin() {
  local g
  for g in /usr/lib/go-1.2[1-9]/bin/go /usr/lib/go/bin/go; do
    [ -x "$g" ] && "$g" version 2>/dev/null | grep -qE ' go1\.(2[1-9]|[3-9][0-9])' && { echo "$g"; return 0; }
  done
  return 1
}
if ! go_bin >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  candidate=$(apt-cache policy golang-go 2>/dev/null | sed -n 's/^ *Candidate: *[0-9]*:*\([0-9.]*\).*/\1/p')
  if printf '%s\n' "$candidate" | grep -qE '^1\.(2[1-9]|[3-9][0-9])'; then
    say "installing golang-go ${candidate} (builds cnitool)"
    apt-get install -y -qq --no-install-recommends golang-go >/dev/null || die "apt-get install golang-go failed"
  else
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the Debian release for its backports (no VERSION_CODENAME in /etc/os-release)"
    if ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      say "adding ${codename}-backports to apt's sources (Go 1.22 for cnitool; backports install only when asked for)"
      echo "deb http://deb.debian.org/debian ${codename}-backports main" > /etc/apt/sources.list.d/dcnet-backports.list
    fi
    say "installing golang-1.22-go from ${codename}-backports (builds cnitool)"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends -t "${codename}-backports" golang-1.22-go >/dev/null \
      || die "apt-get install -t ${codename}-backports golang-1.22-go failed"
  fi
fi
go=$(go_bin) || die "Go 1.21 or later was installed but is not found under /usr/lib/go*"
here=$(cd "$(dirname "$0")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/dcnet"
stamp=$( (cd "$here/third_party/cni" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
if [ "$(cat "$cache/bin/cnitool.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$cache/bin/cnitool" ]; then
  say "building cnitool (libcni 1.2.3) with $("$go" version | cut -d' ' -f3)"
  mkdir -p "$cache/bin"
  (cd "$here/third_party/cni" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOCACHE="$cache/go-build" \
    "$go" build -trimpath -o "$cache/bin/cnitool" ./cnitool) || die "building cnitool failed"
  echo "$stamp" > "$cache/bin/cnitool.stamp"
fi
