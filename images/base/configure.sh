#!/bin/sh
# Runs inside the debootstrapped rootfs (chroot) after the overlay is copied.
# Everything here must work without a running systemd or mounted /proc.
set -eu

# Networking: systemd-networkd (DHCP on any en*/eth* NIC) and resolved for DNS.
systemctl enable systemd-networkd.service systemd-resolved.service
# Serial console: the lab logs ttyS0 to a file on the hypervisor.
systemctl enable serial-getty@ttyS0.service
systemctl enable ssh.service

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
