#!/bin/bash
# Last Packer step: remove everything machine-specific or secret from the image. The first boot
# (dicom-gw-firstboot.service) makes the secrets again, per machine.
set -euo pipefail
BUILD_USER=${BUILD_USER:-gwadmin}
systemctl stop 'dicom-gw-*' nginx postgresql 2>/dev/null || true
# Secrets made during the build.
rm -f /etc/dicom-gw/secrets/jwt.key /etc/dicom-gw/secrets/phi.key /etc/dicom-gw/secrets/db.password
rm -f /etc/dicom-gw/private/db-owner.password /etc/dicom-gw/private/admin.password
rm -f /etc/postgresql/dicom-gw/*.password
rm -f /etc/ssl/dicom-gw/privkey.pem /etc/ssl/dicom-gw/fullchain.pem
rm -f /etc/ssh/ssh_host_*
# The services ran during the build and left runtime files (the event spool) on the image's
# encrypted volumes. Empty them, so firstboot sees them as the image's untouched volumes and
# re-creates them with this machine's volume key (it refuses a volume that holds anything).
findmnt -rn -o TARGET | while read -r vol; do
  [ -e "$vol/.dicom-gw-image-volume" ] || continue
  find "$vol" -mindepth 1 -maxdepth 1 ! -name lost+found ! -name .dicom-gw-image-volume -exec rm -rf {} +
  echo "emptied the image's volume $vol"
done
# The LUKS keyfiles stay (crypttab needs them to open the image's empty volume at first boot,
# where firstboot re-creates the volume with a new key and removes this one).
# Machine identity, logs, caches.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /var/lib/systemd/random-seed /var/lib/dhcp/* /var/lib/systemd/network/* 2>/dev/null || true
find /var/log -type f \( -name '*.gz' -o -name '*.[0-9]' -o -name '*.old' \) -delete
# --no-create: without O_CREAT, fs.protected_regular (set by the hardening role) lets root
# truncate files other users own in sticky directories such as /var/log/postgresql.
find /var/log -type f -exec truncate --no-create -s 0 {} +
# /var/tmp is a filesystem of its own: keep its lost+found.
find /tmp /var/tmp -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf {} +
# /tmp is a tmpfs since the hardening role mounted it: what the build left in the root
# filesystem's /tmp before that is hidden below it. Remove it through a bind mount of /.
if mountpoint -q /tmp; then
  under=$(mktemp -d /run/cleanup-root.XXXXXX)
  mount --bind / "$under"
  find "$under/tmp" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  umount "$under" && rmdir "$under"
fi
rm -rf /var/log/journal/* /root/.ansible /root/.cache /home/"$BUILD_USER"/.ansible /home/"$BUILD_USER"/.cache
apt-get clean
rm -rf /var/lib/apt/lists/*
# The build login's key and passwordless sudo go in Packer's shutdown_command (they are needed
# until then). The account stays: it is the appliance's admin login, firstboot gives it a key.
rm -f /root/.bash_history /home/"$BUILD_USER"/.bash_history
fstrim -av 2>/dev/null || true
sync
