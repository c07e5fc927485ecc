#!/bin/bash
# Build the Debian 12 base disk for the Packer image, offline except for Debian's mirror:
# mmdebstrap a root filesystem (kernel, GRUB, systemd, SSH and the packages the playbook
# installs, so the guest under TCG does not have to), mkfs.ext4 -d it into a partition image, put
# that into a partitioned raw disk and convert it to qcow2. The first boot uses the kernel and
# initrd extracted here (qemu -kernel); Packer's first step then installs GRUB in the guest.
#   packer/build-base-disk.sh OUTDIR   (writes OUTDIR/base.qcow2, vmlinuz, initrd.img, build key)
# Needs root, mmdebstrap, e2fsprogs, fdisk (sfdisk), qemu-utils, openssh-client. About 3-5 min.
set -euo pipefail
OUT=${1:?usage: build-base-disk.sh OUTDIR}
DISK_SIZE=${DISK_SIZE:-8G}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BUILD_USER=${BUILD_USER:-gwadmin}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d "$OUT/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Key for Packer's SSH login during the build (removed from the image by cleanup.sh).
[ -f "$OUT/build_key" ] || ssh-keygen -q -t ed25519 -N '' -C dicom-gw-packer-build -f "$OUT/build_key"

packages=(
  # boot and base system
  linux-image-amd64 grub-pc initramfs-tools systemd systemd-sysv systemd-resolved dbus
  libpam-systemd udev kmod iproute2 procps less nano ca-certificates locales
  openssh-server sudo python3 python3-apt
  # what the playbooks install (pre-installed: apt inside a TCG guest is slow)
  postgresql-15 postgresql-contrib python3-psycopg2 ssl-cert nginx openssl nftables auditd
  audispd-plugins python3-venv python3-packaging
  # hardening, LUKS and first boot
  apparmor apparmor-utils chrony cron libpam-pwquality unattended-upgrades apt-listchanges
  cryptsetup cryptsetup-bin e2fsprogs
  # scanners run by make image-test
  openscap-scanner ssg-debian lynis
)
rootfs="$work/root"
mkdir -p "$rootfs"
mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  --customize-hook='echo dicom-gw > "$1/etc/hostname"' \
  --customize-hook='printf "127.0.0.1 localhost\n127.0.1.1 dicom-gw\n::1 localhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
  --customize-hook='printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/80-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved' \
  --customize-hook='ln -sf /run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
  --customize-hook="chroot \"\$1\" useradd --create-home --shell /bin/bash --groups sudo $BUILD_USER" \
  --customize-hook="install -d -m 0700 \"\$1/home/$BUILD_USER/.ssh\"" \
  --customize-hook="cp '$OUT/build_key.pub' \"\$1/home/$BUILD_USER/.ssh/authorized_keys\"" \
  --customize-hook="chroot \"\$1\" chown -R $BUILD_USER:$BUILD_USER /home/$BUILD_USER/.ssh" \
  --customize-hook="echo '$BUILD_USER ALL=(ALL) NOPASSWD: ALL' > \"\$1/etc/sudoers.d/90-packer-build\"; chmod 0440 \"\$1/etc/sudoers.d/90-packer-build\"" \
  --customize-hook='echo "GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty0 console=ttyS0,115200\"" > "$1/etc/default/grub.d/50-dicom-gw-console.cfg"' \
  --customize-hook='echo "GRUB_TIMEOUT=1" >> "$1/etc/default/grub.d/50-dicom-gw-console.cfg"' \
  --customize-hook='cp -L "$1/vmlinuz" "'"$OUT"'/vmlinuz"; cp -L "$1/initrd.img" "'"$OUT"'/initrd.img"' \
  bookworm "$rootfs" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main"

uuid=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" > "$rootfs/etc/fstab"
: > "$rootfs/etc/machine-id"
echo "$uuid" > "$OUT/root.uuid"

# Partition image (1 MiB reserved in front for the MBR and GRUB's core image).
part="$work/part.img"
truncate -s "$DISK_SIZE" "$part"
truncate -s -1M "$part"
mkfs.ext4 -q -F -U "$uuid" -L dicom-gw-root -d "$rootfs" "$part"
raw="$work/disk.raw"
truncate -s "$DISK_SIZE" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
dd if="$part" of="$raw" bs=1M seek=1 conv=sparse,notrunc status=none
qemu-img convert -c -O qcow2 "$raw" "$OUT/base.qcow2"
sha256sum "$OUT/base.qcow2" | awk '{print $1}' > "$OUT/base.qcow2.sha256"
echo "base disk: $OUT/base.qcow2 ($(du -h "$OUT/base.qcow2" | cut -f1)), root UUID $uuid"
