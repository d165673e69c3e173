#!/bin/sh
# k3s-uninstall.sh, installed by edgeforge: removes k3s from this node (the
# counterpart of install.sh's script of that name): stops it and what it
# started (k3s-killall.sh), then removes its units and environment files,
# the binary and the kubectl/crictl/ctr links that point at it, and its
# state: /etc/rancher/k3s, /var/lib/rancher/k3s, /run/k3s,
# /var/lib/kubelet, the CNI's state. Whatever else is on the node stays.
set -u

if [ "$(id -u)" -ne 0 ]; then
    echo "k3s-uninstall.sh: run as root" >&2
    exit 1
fi

if [ -x /usr/local/bin/k3s-killall.sh ]; then
    /usr/local/bin/k3s-killall.sh
fi

for unit in k3s k3s-agent; do
    systemctl disable "$unit.service" >/dev/null 2>&1 || true
    rm -f "/etc/systemd/system/$unit.service" "/etc/systemd/system/$unit.service.env"
done
systemctl daemon-reload >/dev/null 2>&1 || true
systemctl reset-failed k3s.service k3s-agent.service >/dev/null 2>&1 || true

for cmd in kubectl crictl ctr; do
    link=/usr/local/bin/$cmd
    if [ -L "$link" ] && [ "$(readlink "$link")" = k3s ]; then
        rm -f "$link"
    fi
done

rm -rf /etc/rancher/k3s /run/k3s /run/flannel /var/lib/rancher/k3s /var/lib/kubelet /var/lib/cni
rmdir /etc/rancher /var/lib/rancher 2>/dev/null || true
rm -f /usr/local/bin/k3s /usr/local/bin/k3s-killall.sh /usr/local/bin/k3s-uninstall.sh
exit 0
