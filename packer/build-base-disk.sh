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
  libpam-systemd udev kmod iproute2 procps less nano ca-certificates locales logrotate
  openssh-server sudo python3 python3-apt
  # what the playbooks install (pre-installed: apt inside a TCG guest is slow)
  postgresql-15 postgresql-contrib python3-psycopg2 ssl-cert nginx openssl nftables auditd certbot
  audispd-plugins python3-venv python3-packaging
  # hardening, LUKS and first boot
  apparmor apparmor-utils chrony cron libpam-pwquality cracklib-runtime unattended-upgrades apt-listchanges
  acct sysstat debsums libpam-tmpdir
  cryptsetup cryptsetup-bin e2fsprogs
  # scanners run by make image-test
  openscap-scanner ssg-debian lynis
)
rootfs="$work/root"
mkdir -p "$rootfs"
# --skip=cleanup/apt/lists: keep the package lists. The roles refresh them only when older than an
# hour, and a fresh base disk's empty list directory looks fresh: every package not installed here
# would be "not available" (cleanup.sh removes the lists from the finished image).
mmdebstrap --variant=minbase --skip=cleanup/apt/lists --include="$(IFS=,; echo "${packages[*]}")" \
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

# Partitions (CIS 1.1.2.3-1.1.2.7): /var, /var/tmp, /var/log, /var/log/audit and /home each on
# their own filesystem, with nodev/nosuid/noexec where CIS asks for them, so a full log or a
# runaway upload cannot fill the root filesystem and the options hold. /tmp is a tmpfs
# (tmp.mount, the hardening role). Sizes in MiB; the disk is sparse, unused space costs nothing.
#   mount point      size                      options
parts=(
  "/               ${ROOT_MB:-2560}          errors=remount-ro"
  "/var            ${VAR_MB:-5120}           nodev,nosuid"
  "/var/tmp        ${VAR_TMP_MB:-256}        nodev,nosuid,noexec"
  "/var/log        ${VAR_LOG_MB:-1024}       nodev,nosuid,noexec"
  "/var/log/audit  ${VAR_LOG_AUDIT_MB:-768}  nodev,nosuid,noexec"
  "/home           ${HOME_MB:-256}           nodev,nosuid"
)
# Move each mount point's contents into a tree of its own, deepest first (a parent's tree then
# keeps the child's empty mount point directory); the tree's top keeps the directory's mode.
fsroot() { if [ "$1" = / ]; then echo "$rootfs"; else echo "$work/fs$(echo "$1" | tr / _)"; fi; }
for ((i = ${#parts[@]} - 1; i > 0; i--)); do
  read -r mnt _ _ <<<"${parts[$i]}"
  tree=$(fsroot "$mnt")
  mkdir -p "$tree" "$rootfs$mnt"
  chmod --reference="$rootfs$mnt" "$tree"; chown --reference="$rootfs$mnt" "$tree"
  find "$rootfs$mnt" -mindepth 1 -maxdepth 1 -exec mv -t "$tree" {} +
done
: > "$rootfs/etc/machine-id"
: > "$rootfs/etc/fstab"
# GPT: a 1 MiB BIOS boot partition for GRUB's core image, then the filesystems.
raw="$work/disk.raw"
table="label: gpt"$'\n'"start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=bios-boot"
offset=2  # MiB
layout=()
for entry in "${parts[@]}"; do
  read -r mnt size opts <<<"$entry"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  label=$(echo "$mnt" | tr -d /); label=${label:-root}
  table+=$'\n'"start=$((offset * 2048)), size=$((size * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=$label"
  pass=2; [ "$mnt" = / ] && { pass=1; echo "$uuid" > "$OUT/root.uuid"; }
  echo "UUID=$uuid $mnt ext4 $opts 0 $pass" >> "$rootfs/etc/fstab"
  layout+=("$mnt $size $offset $uuid $label")
  offset=$((offset + size))
done
truncate -s "$(( (offset + 1) * 1024 * 1024 ))" "$raw"
echo "$table" | sfdisk -q "$raw"
for entry in "${layout[@]}"; do
  read -r mnt size offset uuid label <<<"$entry"
  part="$work/part.img"
  rm -f "$part"; truncate -s "${size}M" "$part"
  tree=$(fsroot "$mnt")
  mkfs.ext4 -q -F -U "$uuid" -L "$label" -d "$tree" "$part"
  # mke2fs -d does not copy the top directory's mode and owner (/var/tmp must be 1777).
  debugfs -w -R "sif / mode 0$(printf '%o' "0x$(stat -c %f "$tree")")" "$part" 2>/dev/null
  debugfs -w -R "sif / uid $(stat -c %u "$tree")" "$part" 2>/dev/null
  debugfs -w -R "sif / gid $(stat -c %g "$tree")" "$part" 2>/dev/null
  dd if="$part" of="$raw" bs=1M seek="$offset" conv=sparse,notrunc status=none
  rm -f "$part"
done
qemu-img convert -c -O qcow2 "$raw" "$OUT/base.qcow2"
sha256sum "$OUT/base.qcow2" | awk '{print $1}' > "$OUT/base.qcow2.sha256"
echo "base disk: $OUT/base.qcow2 ($(du -h "$OUT/base.qcow2" | cut -f1)), root UUID $(cat "$OUT/root.uuid")"
cat "$rootfs/etc/fstab"
