#!/bin/sh
# Runs inside the debootstrapped live rootfs (chroot) after the overlay is copied.
set -eu

# DHCP on any NIC (systemd-networkd), sshd, a serial console for debugging.
systemctl enable systemd-networkd.service ssh.service serial-getty@ttyS0.service
# Nothing periodic runs in an installer that lives for minutes, and the
# serial console is the one login prompt (getty-static would start six more).
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    e2scrub_reap.service getty-static.service 2>/dev/null || true

# Drivers an installer never needs (graphics, sound, radios, cameras): a
# smaller squashfs to copy into memory and fewer modules for udev to load.
for d in sound drivers/gpu drivers/media drivers/net/wireless net/wireless \
    drivers/bluetooth net/bluetooth drivers/infiniband drivers/staging drivers/iio \
    drivers/hid/intel-ish-hid drivers/input/joystick drivers/input/touchscreen drivers/isdn; do
    rm -rf /lib/modules/*/kernel/"$d"
done
for k in /lib/modules/*; do depmod "${k##*/}"; done

# No password login at all: root logs in with the key edgeforge injects per node.
passwd -l root
echo edgeforge-live > /etc/hostname

# Host keys are edgeforge's, per node (see overlay/etc/initramfs-tools/).
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

# The initrd must carry the hook that copies the node's key material.
chmod 0755 /etc/initramfs-tools/scripts/init-bottom/edgeforge-node
update-initramfs -u -k all

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
