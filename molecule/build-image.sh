#!/bin/sh
# Build the Debian 12 systemd image the Molecule scenarios boot (no container registry needed):
# mmdebstrap a minimal rootfs from the Debian mirror, then `podman import` it with systemd as PID 1.
#
#   molecule/build-image.sh [IMAGE]        (default localhost/dicom-gw-debian12-systemd:latest)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR,
# FORCE=1 rebuilds an existing image. Needs root, mmdebstrap and podman (make ansible-deps).
set -eu

IMAGE="${1:-${MOLECULE_IMAGE:-localhost/dicom-gw-debian12-systemd:latest}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    echo "image $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

packages="systemd,systemd-sysv,dbus,libpam-systemd,python3,python3-apt,sudo,acl,iproute2,procps"
packages="$packages,ca-certificates,openssh-server"

mmdebstrap --variant=minbase --include="$packages" \
    --customize-hook='truncate -s 0 "$1/etc/machine-id"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='rm -f "$1"/var/lib/apt/lists/*_Packages "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs.tar" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main"

podman import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=podman' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    "$work/rootfs.tar" "$IMAGE"
echo "built $IMAGE"
