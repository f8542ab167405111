#!/usr/bin/env bash
# Installs what nwf-fast needs on a Debian 12 host (run as root), then, from a
# checkout, the npm packages (from the lock file) and the compiled CLI.
# Idempotent: packages already present are not installed again.
#
#   scripts/install-deps.sh            everything: the runtime, plus what the tests,
#                                      the benchmark and the demo use (CI, development)
#   scripts/install-deps.sh --runtime  only what a production host needs to run nwf-fast
#                                      (README: Installing)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }
mode=all
case "${1:-}" in
  '') ;;
  --runtime) mode=runtime ;;
  -h | --help) usage; exit 0 ;;
  *) echo "install-deps: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac
(($# <= 1)) || { echo "install-deps: one argument at most" >&2; exit 2; }

# What a production host needs. Node.js itself (18.19 or later: Debian 12's
# nodejs works) is not installed here.
RUNTIME_PKGS=(
  nftables          # nft and libnftables.so.1: the nft backend (load, status, unload)
  libbpf1           # libbpf.so.1: the eBPF backend (load, attach, counters); not needed for nft only
  clang-19          # compiles the eBPF programs (compile --backend bpf|both); not needed for nft only
  libbpf-dev        # bpf_helpers.h and the kernel headers clang-19 compiles them with
)

# The test machine on top of the runtime: kernel tests, conformance against real
# libvirt, benchmark, demo. Add test-only packages here.
TEST_PKGS=(
  iproute2          # ip, tc, bridge: the namespace test hosts and the demo
  llvm-19           # llvm-objdump-19 for inspecting BPF objects by hand (no test runs it)
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
  qemu-system-x86   # real VMs (test/kernel/vm-*): QEMU guests (TCG) run by a private libvirtd
  libvirt-daemon-driver-qemu  # libvirtd's QEMU driver
  linux-image-cloud-amd64     # the guests' kernel (direct kernel boot) and its virtio modules
  busybox-static    # the guests' userland (initramfs)
  gcc libc6-dev     # the guests' frame sender, built with gcc -static
  libxml2-utils     # xmllint: virt-xml-validate checks the test domain XML
  ca-certificates
)

PKGS=("${RUNTIME_PKGS[@]}")
[[ $mode == runtime ]] || PKGS+=("${TEST_PKGS[@]}")

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

# What nwf-fast and the tests run: fail here, by name, rather than later.
commands=(nft clang-19)
[[ $mode == runtime ]] || commands+=(ip tc bridge bpftool ebtables trafgen tcpdump conntrack iptables libvirtd virsh)
for c in "${commands[@]}"; do
  command -v "$c" >/dev/null || { echo "install-deps: '$c' is missing after the install" >&2; exit 1; }
done
[[ -e /usr/include/bpf/bpf_helpers.h ]] || { echo "install-deps: libbpf headers are missing after the install" >&2; exit 1; }
# Real VMs (tests only).
if [[ ${mode:-all} != runtime ]]; then
  for c in qemu-system-x86_64 gcc xmllint; do
    command -v "$c" >/dev/null || { echo "install-deps: '$c' is missing after the install" >&2; exit 1; }
  done
  compgen -G '/boot/vmlinuz-*-cloud-amd64' >/dev/null || { echo "install-deps: no guest kernel /boot/vmlinuz-*-cloud-amd64 after the install" >&2; exit 1; }
  [[ -x /bin/busybox && -e /usr/lib/x86_64-linux-gnu/libc.a ]] || { echo "install-deps: busybox or libc.a is missing after the install" >&2; exit 1; }
fi

# libvirtd's QEMU driver refuses to start without its user and groups (tests only).
if [[ $mode != runtime && $(id -u) -eq 0 ]]; then
  getent group kvm >/dev/null || groupadd -r kvm
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi

# npm ci empties node_modules first, through a symlink too: a worktree whose
# node_modules links to another checkout's shared install must leave it alone.
if [[ -L node_modules ]]; then
  echo "install-deps: node_modules links to $(readlink node_modules): a shared install, npm ci not run here"
elif [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "install-deps: npm ci (its prepare script builds dist/)"
  npm ci --no-audit --no-fund --loglevel=error
  exit 0
fi

echo "install-deps: npm run build"
npm run --silent build
