#!/bin/bash
# Boot fresh copies of the appliance image in qemu (TCG unless IMAGE_ACCELERATOR=kvm), one VM at a
# time, and verify what only a VM can show. Prints one line per check and the scanners' scores.
#   packer/image-test.sh packer/output/dicom-gw.qcow2
set -uo pipefail
IMAGE=$(readlink -f "${1:?usage: image-test.sh IMAGE.qcow2}")
ACCEL=${IMAGE_ACCELERATOR:-tcg}
SSH_PORT=${SSH_PORT:-2222}; HTTPS_PORT=${HTTPS_PORT:-8443}; DICOM_PORT=${DICOM_PORT:-11112}
HOST_DICOM_PORT=${HOST_DICOM_PORT:-21112}; SINK_PORT=${SINK_PORT:-11113}
USER_NAME=${USER_NAME:-gwadmin}
WORK=$(mktemp -d /tmp/dicom-gw-image-test.XXXXXX)
trap 'stop_vm; kill $SINK_PID 2>/dev/null; rm -rf "$WORK"' EXIT
ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
touch "$WORK/keep"
PASS=0; FAIL=0; VM_PID=""; SINK_PID=""
ok() { echo "PASS  $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL  $*"; FAIL=$((FAIL + 1)); }
check() { local name=$1; shift; if "$@" >"$WORK/last" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/      /' "$WORK/last" | tail -5; fi; }
SSH=(ssh -i "$WORK/key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o ConnectTimeout=10 "$USER_NAME@127.0.0.1")
vm() { "${SSH[@]}" "$@"; }
root() { "${SSH[@]}" "echo $OS_PW | sudo -S -p '' bash -c $(printf '%q' "$*")"; }

start_vm() {  # start_vm DISK SERIALLOG
  qemu-system-x86_64 -machine q35,accel="$ACCEL" -m 3072 -smp 2 -display none -no-user-config \
    -drive file="$1",if=none,id=root,format=qcow2,discard=unmap -device virtio-blk-pci,drive=root,bootindex=0 \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22,hostfwd=tcp:127.0.0.1:$HTTPS_PORT-:443,hostfwd=tcp:127.0.0.1:$HOST_DICOM_PORT-:$DICOM_PORT,guestfwd=tcp:10.0.2.100:$SINK_PORT-tcp:127.0.0.1:$SINK_PORT \
    -device virtio-net-pci,netdev=n0 \
    -fw_cfg name=opt/dicom-gw/authorized_keys,file="$WORK/key.pub" \
    -fw_cfg name=opt/dicom-gw/keep-os-password,file="$WORK/keep" \
    -serial file:"$2" -pidfile "$WORK/qemu.pid" &
  VM_PID=$!
}
stop_vm() { [ -n "$VM_PID" ] && kill "$VM_PID" 2>/dev/null && wait "$VM_PID" 2>/dev/null; VM_PID=""; }
wait_ssh() {
  local t0=$SECONDS
  until vm true 2>/dev/null; do
    sleep 5
    if (( SECONDS - t0 > ${BOOT_TIMEOUT:-900} )); then return 1; fi
  done
  echo "      (SSH after $((SECONDS - t0)) s)"
}
os_password() {  # firstboot prints the one-time console password on the serial console
  sed -n "s/.*Console login: *$USER_NAME \/ \([^ ]*\).*/\1/p" "$1" | tail -1
}
secrets_fingerprint() {
  root "sha256sum /etc/dicom-gw/secrets/jwt.key /etc/dicom-gw/secrets/phi.key /etc/dicom-gw/secrets/db.password \
        /etc/ssh/ssh_host_ed25519_key /etc/ssl/dicom-gw/privkey.pem /etc/luks-keys/*.key; \
        cryptsetup luksDump /var/lib/dicom-gw-luks/storage.luks | grep -i '^UUID'" | awk '{print $1}'
}

# --- First VM: a fresh copy of the image ---------------------------------------------------
qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE" "$WORK/vm1.qcow2"
t0=$SECONDS; start_vm "$WORK/vm1.qcow2" "$WORK/serial1.log"
if ! wait_ssh; then bad "boot to SSH"; tail -30 "$WORK/serial1.log"; exit 1; fi
ok "boot to SSH ($((SECONDS - t0)) s, $ACCEL)"
OS_PW=$(os_password "$WORK/serial1.log")
check "firstboot printed a one-time console password" test -n "$OS_PW"
vm "until [ -e /var/lib/dicom-gw-firstboot/done ] || systemctl is-failed -q dicom-gw-firstboot; do sleep 2; done; systemctl is-system-running --wait" >/dev/null 2>&1
check "firstboot finished and disabled itself" root "test -e /var/lib/dicom-gw-firstboot/done && ! systemctl is-enabled -q dicom-gw-firstboot"
check "first admin's password in a root-only file" root "test \$(stat -c %a:%U /etc/dicom-gw/private/admin.password) = 600:root && test -s /etc/dicom-gw/private/admin.password"
check "no failed units" root "test -z \"\$(systemctl list-units --failed --plain --no-legend)\" || { systemctl list-units --failed; false; }"
check "every gateway unit active" root "for u in \$(systemctl list-units --plain --no-legend 'dicom-gw-*' | awk '{print \$1}' | grep -v firstboot); do systemctl is-active -q \$u || { echo \$u; exit 1; }; done; systemctl is-active -q dicom-gw-scp"
check "auditd active with rules loaded" root "systemctl is-active -q auditd && auditctl -l | grep -q dicom"
check "audit event for a write to the config" root "touch /etc/dicom-gw/gateway.toml && sleep 2 && ausearch --input-logs -f /etc/dicom-gw/gateway.toml -ts recent | grep -q gateway.toml"
check "AppArmor enabled and enforcing" root "aa-status --enabled && test \$(aa-status --complaining) -eq 0 && test \$(aa-status --enforced) -gt 0"
check "nftables default-drop input" root "nft list chain inet filter input 2>/dev/null | grep -q 'policy drop' || nft list ruleset | grep -q 'hook input.*policy drop'"
check "only the intended ports listen publicly" root "ss -Hltn | awk '{print \$4}' | grep -vE '^(127\\.|\\[::1\\]|::1)' | sed 's/.*://' | sort -un | tr '\\n' ' ' | grep -qxE '(22 )?(80 )?(443 )?($DICOM_PORT )?'"
check "/tmp and /dev/shm nodev,nosuid,noexec" root "for m in /tmp /dev/shm; do findmnt -no OPTIONS \$m | grep -q nodev && findmnt -no OPTIONS \$m | grep -q nosuid && findmnt -no OPTIONS \$m | grep -q noexec || exit 1; done"
check "data volume is LUKS2, unlocked by crypttab, mounted nodev,nosuid,noexec" root "cryptsetup status dicom-gw-storage | grep -q LUKS2 && grep -q '^dicom-gw-storage ' /etc/crypttab && findmnt -no OPTIONS /var/lib/dicom-gw/storage | grep -q noexec"
check "HTTPS serves the UI" curl -skf -o /dev/null "https://127.0.0.1:$HTTPS_PORT/"
# DICOM round trip: storescu -> the VM's gateway -> a storescp sink on this host.
if command -v storescp >/dev/null && command -v storescu >/dev/null; then
  mkdir -p "$WORK/sink" "$WORK/in"
  storescp --fork -aet SINK -od "$WORK/sink" "$SINK_PORT" >/dev/null 2>&1 & SINK_PID=$!
  sample="$WORK/in/sample.dcm"
  printf '%s\n' '(0008,0016) UI =SecondaryCaptureImageStorage' '(0008,0018) UI [1.2.826.0.1.3680043.8.498.77.1]' \
    '(0008,0060) CS [OT]' '(0010,0010) PN [Image^Test]' '(0010,0020) LO [IMGTEST1]' \
    '(0020,000d) UI [1.2.826.0.1.3680043.8.498.77.2]' '(0020,000e) UI [1.2.826.0.1.3680043.8.498.77.3]' \
    > "$WORK/in/sample.dump"
  dump2dcm +te "$WORK/in/sample.dump" "$sample" >/dev/null 2>&1
  if [ -s "$sample" ]; then
    root "/opt/dicom-gw/venv/bin/dicom-gw --config /etc/dicom-gw/gateway.toml destination add sink --host 10.0.2.100 --port $SINK_PORT --ae-title SINK >/dev/null 2>&1; /opt/dicom-gw/venv/bin/dicom-gw --config /etc/dicom-gw/gateway.toml rule add all --to sink >/dev/null 2>&1; true"
    storescu -aec DICOM_GW 127.0.0.1 "$HOST_DICOM_PORT" "$sample" >/dev/null 2>&1
    for _ in $(seq 60); do [ -n "$(ls -A "$WORK/sink")" ] && break; sleep 2; done
    got=$(find "$WORK/sink" -type f | head -1)
    check "DICOM round trip keeps the dataset's bytes identical" python3 - "$sample" "$got" <<'PY'
import struct, sys
def dataset(path):  # the bytes after the preamble and the File Meta Information group
    b = open(path, "rb").read()
    assert b[128:132] == b"DICM", path
    (glen,) = struct.unpack("<I", b[132 + 8:132 + 12])
    return b[132 + 12 + glen:]
sys.exit(0 if dataset(sys.argv[1]) == dataset(sys.argv[2]) else 1)
PY
  else
    bad "DICOM round trip (dump2dcm could not make a sample)"
  fi
else
  bad "DICOM round trip (dcmtk not installed on the host)"
fi
# Scanners no one here wrote.
root "cd /tmp && ds=\$(ls /usr/share/xml/scap/ssg/content/ssg-debian12-ds.xml /usr/share/xml/scap/ssg/content/ssg-debian*-ds.xml 2>/dev/null | head -1); \
  [ -n \"\$ds\" ] || exit 0; prof=\$(oscap info --profiles \"\$ds\" 2>/dev/null | grep -o 'xccdf_org.ssgproject.content_profile_standard' | head -1); \
  echo \"OpenSCAP datastream \$ds profile \${prof:-(none)}\"; \
  oscap xccdf eval --profile \"\${prof:-standard}\" \"\$ds\" 2>/dev/null | awk '/^Result/ {r[\$2]++} END {a=r[\"pass\"]+r[\"fail\"]; printf \"OpenSCAP: pass %d fail %d (%.1f%% of applicable)\\n\", r[\"pass\"], r[\"fail\"], a ? 100*r[\"pass\"]/a : 0}'; \
  oscap xccdf eval --profile \"\${prof:-standard}\" \"\$ds\" 2>/dev/null | awk '/^Title/ {t=\$0} /^Result.*fail/ {print \"  failed:\", t}' | head -40" | tee "$WORK/oscap.txt"
root "command -v lynis >/dev/null && lynis audit system --quick --no-colors --no-log 2>/dev/null | grep -E 'Hardening index|Tests performed'" | tee "$WORK/lynis.txt"
before=$(secrets_fingerprint)
vm "echo persisted > /var/lib/dicom-gw/storage/.image-test 2>/dev/null" || root "echo persisted > /var/lib/dicom-gw/storage/.image-test"
# Reboot: the volume opens from crypttab again, data intact.
root "systemctl reboot" >/dev/null 2>&1; sleep 20
if wait_ssh; then
  check "data volume survives a reboot with data intact" root "grep -qx persisted /var/lib/dicom-gw/storage/.image-test"
  check "no failed units after reboot" root "test -z \"\$(systemctl list-units --failed --plain --no-legend)\""
else bad "reboot to SSH"; fi
root "systemctl poweroff" >/dev/null 2>&1; sleep 10; stop_vm

# --- Second VM: another fresh copy; its secrets must differ ---------------------------------
qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE" "$WORK/vm2.qcow2"
start_vm "$WORK/vm2.qcow2" "$WORK/serial2.log"
if wait_ssh; then
  OS_PW=$(os_password "$WORK/serial2.log")
  vm "until [ -e /var/lib/dicom-gw-firstboot/done ]; do sleep 2; done" >/dev/null 2>&1
  after=$(secrets_fingerprint)
  check "firstboot secrets differ between two copies" bash -c "[ -n '$after' ] && [ -z \"\$(comm -12 <(echo '$before' | sort) <(echo '$after' | sort))\" ]"
else bad "second copy boot to SSH"; fi
stop_vm
echo "image-test: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
