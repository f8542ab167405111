#!/usr/bin/env bash
# Installs everything nwf-fast needs on a Debian 12 host (run as root):
# system packages, npm packages (from the lock file) and the compiled CLI.
# Idempotent: packages already present are not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  nftables          # nft (nftables backend, tests)
  iproute2          # ip, tc, bridge
  clang-19 llvm-19  # BPF programs (issue 4 backend)
  libbpf-dev        # bpf_helpers.h, libbpf.so.1
  bpftool           # inspection
  ebtables          # foreign-rule survival tests, libvirt baseline
  netsniff-ng       # trafgen (benchmarks)
  python3-scapy     # crafted frames in tests
  tcpdump           # capture in tests
  conntrack         # flushing connection tracking between L3 test frames
  libvirt-daemon    # real libvirt nwfilter: the reference of the conformance tests and benchmarks
  libvirt-clients   # virsh
  libvirt-daemon-config-nwfilter  # libvirt's own standard filters
  iptables          # libvirt's L3 rules
  ca-certificates
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# What the tests and the CLI run: fail here, by name, rather than in a test.
for c in nft ip tc bridge clang-19 bpftool ebtables trafgen tcpdump conntrack iptables libvirtd virsh; do
  command -v "$c" >/dev/null || { echo "install-deps: '$c' is missing after the install" >&2; exit 1; }
done
[[ -e /usr/include/bpf/bpf_helpers.h ]] || { echo "install-deps: libbpf headers are missing after the install" >&2; exit 1; }

# libvirtd's QEMU driver refuses to start without its user and groups (no QEMU is installed or run).
if [[ $(id -u) -eq 0 ]]; then
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "install-deps: npm run build"
npm run --silent build
