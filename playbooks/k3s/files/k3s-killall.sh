#!/bin/sh
# k3s-killall.sh, installed by edgeforge: stops k3s and everything it started
# on this node (the counterpart of install.sh's script of that name), so a
# node can be reset or k3s restarted from scratch. It removes only what k3s
# owns: its units' processes, its mounts, its network interfaces and network
# namespaces, and the iptables rules and chains named KUBE-*, CNI-* or
# *flannel*, deleted one by one (`iptables-restore --noflush`): no table is
# flushed, so every other rule (an SSH rule, a firewall) stays as it is.
set -u

if [ "$(id -u)" -ne 0 ]; then
    echo "k3s-killall.sh: run as root" >&2
    exit 1
fi

for unit in k3s.service k3s-agent.service; do
    systemctl stop "$unit" >/dev/null 2>&1 || true
done

# Processes k3s started from its data directory (containerd, shims, the
# containers' processes run by them) are not stopped with the unit
# (KillMode=process keeps containers across restarts).
data=/var/lib/rancher/k3s/data
kill_under_data() {
    sig=$1
    found=1
    for exe in /proc/[0-9]*/exe; do
        target=$(readlink "$exe" 2>/dev/null) || continue
        case "$target" in
        "$data"/*)
            pid=${exe#/proc/}
            pid=${pid%/exe}
            kill "-$sig" "$pid" 2>/dev/null && found=0
            ;;
        esac
    done
    return $found
}
if kill_under_data TERM; then
    tries=0
    while kill_under_data 0 && [ "$tries" -lt 20 ]; do
        tries=$((tries + 1))
        sleep 0.5
    done
    kill_under_data KILL || true
fi

# Mounts of pods and of k3s's runtime, deepest first.
awk '$2 ~ "^/run/k3s" || $2 ~ "^/var/lib/kubelet" || $2 ~ "^/var/lib/rancher/k3s" || $2 ~ "^/run/netns/cni-" { print $2 }' \
    /proc/self/mounts | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
done

# Pod network namespaces and the CNI's interfaces.
if command -v ip >/dev/null 2>&1; then
    ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ { print $1 }' | while read -r ns; do
        ip netns delete "$ns" 2>/dev/null || true
    done
    for link in cni0 flannel.1 flannel-v6.1 flannel-wg flannel-wg-v6 kube-ipvs0; do
        if ip link show "$link" >/dev/null 2>&1; then
            ip link delete "$link" 2>/dev/null || true
        fi
    done
fi
rm -rf /var/lib/cni /run/flannel

# iptables rules k3s owns, deleted one by one; chains it owns flushed and removed.
for tool in iptables ip6tables; do
    command -v "$tool-save" >/dev/null 2>&1 || continue
    command -v "$tool-restore" >/dev/null 2>&1 || continue
    "$tool-save" 2>/dev/null | awk '
        function owned(name) { return name ~ /^(KUBE-|CNI-)/ || tolower(name) ~ /flannel/ }
        /^\*/ { print; n = 0; next }
        /^:/ { chain = substr($1, 2); if (owned(chain)) chains[++n] = chain; next }
        /^-A / {
            # Rules inside an owned chain go with the chain.
            if (owned($2)) next
            if ($0 ~ /KUBE-|CNI-/ || tolower($0) ~ /flannel/) { sub(/^-A /, "-D "); print }
            next
        }
        /^COMMIT/ {
            for (i = 1; i <= n; i++) print "-F " chains[i]
            for (i = 1; i <= n; i++) print "-X " chains[i]
            print
            next
        }
    ' | "$tool-restore" --noflush || echo "k3s-killall.sh: $tool: some k3s rules could not be removed" >&2
done
exit 0
