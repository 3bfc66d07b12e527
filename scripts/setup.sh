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
DEB_PACKAGES=(
  iproute2 iputils-ping bpftool iptables nftables tcpdump curl python3 python3-venv util-linux
  dnsutils knot-dnsutils dnsperf knot
  iperf3 haproxy hyperfine wrk etcd-server
  runc podman busybox-static openssl zookeeper
)
# bpf-linker links the eBPF programs; it must be built against the LLVM of the nightly toolchain
# that compiles them (rustc emits that LLVM's bitcode).
BPF_LINKER_VERSION=0.13.0
# The Marathon client library the /v2 API is tested with (PyPI), in a venv of its own.
MARATHON_PY_VERSION=0.13.0
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
