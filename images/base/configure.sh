#!/bin/sh
# Runs inside the debootstrapped rootfs (chroot) after the overlay is copied.
# Everything here must work without a running systemd or mounted /proc.
set -eu

# Networking: systemd-networkd (DHCP on any en*/eth* NIC) and resolved for DNS.
systemctl enable systemd-networkd.service systemd-resolved.service
# Serial console: the lab logs ttyS0 to a file on the hypervisor.
systemctl enable serial-getty@ttyS0.service
systemctl enable ssh.service

# libvirt is installed for the virt layer but does not run until that layer
# enables it: lab guests that are not hypervisors pay nothing for it.
for unit in libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket \
    libvirtd-tcp.socket libvirtd-tls.socket virtlogd.service virtlogd.socket \
    virtlogd-admin.socket virtlockd.service virtlockd.socket virtlockd-admin.socket \
    libvirt-guests.service; do
    if [ -e "/lib/systemd/system/$unit" ]; then
        systemctl disable "$unit"
    fi
done

# No root password; access is by the SSH key cloud-init installs.
passwd -d root

# Each VM gets its own identity: host keys come from cloud-init, machine-id
# from first boot.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# DNS inside the guest comes from resolved (the build used the host's).
ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf

# Keep the image small.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
