#!/bin/bash
# Boot fresh copies of the appliance image in qemu (TCG unless IMAGE_ACCELERATOR=kvm), one VM at a
# time, and verify what only a VM can show. Prints one line per check, the scanners' scores and a
# closing "N passed, N failed" line; exits non-zero when a check failed.
#   packer/image-test.sh packer/output/dicom-gw.qcow2
# Two boots of one copy (the first boot, then a reboot) and one boot of a second copy (its
# secrets must differ): under TCG a boot takes 1-2 minutes, so boots are kept to these three.
# Secrets are compared by their SHA-256 inside the VMs and never printed.
set -uo pipefail
IMAGE=$(readlink -f "${1:?usage: image-test.sh IMAGE.qcow2}")
ACCEL=${IMAGE_ACCELERATOR:-tcg}
USER_NAME=${USER_NAME:-gwadmin}
DICOM_PORT=${DICOM_PORT:-11112}  # the gateway's port in the VM
BOOT_TIMEOUT=${BOOT_TIMEOUT:-900}
OSCAP_TARGET=${OSCAP_TARGET:-95}  # % of applicable rules of the OpenSCAP profile that must pass
LYNIS_TARGET=${LYNIS_TARGET:-85}  # Lynis hardening index
WORK=$(mktemp -d /tmp/dicom-gw-image-test.XXXXXX)
KEEP_WORK=${KEEP_WORK:-0}
PASS=0; FAIL=0; VM_PID=""; SINK_PID=""; OS_PW=""; T_START=$SECONDS
cleanup() {
  stop_vm
  [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
  if [ "$KEEP_WORK" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Host ports: the first free one from each default (other engineers' services share this host).
free_port() {
  local p=$1
  while ss -Hltn "sport = :$p" | grep -q .; do p=$((p + 1)); done
  echo "$p"
}
SSH_PORT=$(free_port "${SSH_PORT:-2222}")
HTTPS_PORT=$(free_port "${HTTPS_PORT:-8443}")
HOST_DICOM_PORT=$(free_port "${HOST_DICOM_PORT:-21112}")
SINK_PORT=$(free_port "${SINK_PORT:-21113}")  # storescp on this host; the VM reaches it at 10.0.2.2

ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
touch "$WORK/keep"
# The scanners' scores beside the issue's targets. A score below its target is printed and summed
# up at the end, and fails the test only with SCORE_TARGETS=enforce: the OpenSCAP profile cannot
# reach its target on this appliance by design (docs/compliance.md); the checks above catch any
# new failing rule.
SCORE_TARGETS=${SCORE_TARGETS:-report}
SCANNERS=${SCANNERS:-run}  # skip: leave OpenSCAP and Lynis out (a quicker run while working on the image)
BELOW=0
score() {  # score NAME VALUE TARGET UNIT
  if [ -n "$2" ] && awk -v p="$2" -v t="$3" 'BEGIN {exit !(p + 0 >= t + 0)}'; then
    echo "SCORE $1: $2$4 (target $3$4: met)"
  else
    echo "SCORE $1: ${2:-none}$4 (target $3$4: NOT met)"; BELOW=$((BELOW + 1))
    [ "$SCORE_TARGETS" = enforce ] && FAIL=$((FAIL + 1))
  fi
}
ok() { echo "PASS  $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL  $*"; FAIL=$((FAIL + 1)); }
check() {  # check NAME COMMAND...: PASS or FAIL with the command's last lines
  local name=$1; shift
  if "$@" >"$WORK/last" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/      /' "$WORK/last" | tail -8; fi
}
SSH=(ssh -i "$WORK/key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3
     -o BatchMode=yes "$USER_NAME@127.0.0.1")
vm() { "${SSH[@]}" "$@" </dev/null; }
# As root through sudo: the one-time password goes on stdin, never on a command line.
root() { printf '%s\n' "$OS_PW" | "${SSH[@]}" "sudo -S -p '' bash -c $(printf '%q' "$*")"; }

start_vm() {  # start_vm DISK SERIALLOG
  # One NIC with host forwards for SSH, HTTPS and DICOM; the guest reaches this host's loopback
  # at 10.0.2.2 (slirp). The first login key and "keep the OS password usable" come by fw_cfg.
  qemu-system-x86_64 -machine q35,accel="$ACCEL" -m 3072 -smp 2 -display none -no-user-config \
    -drive file="$1",if=none,id=root,format=qcow2,discard=unmap -device virtio-blk-pci,drive=root,bootindex=0 \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22,hostfwd=tcp:127.0.0.1:$HTTPS_PORT-:443,hostfwd=tcp:127.0.0.1:$HOST_DICOM_PORT-:$DICOM_PORT \
    -device virtio-net-pci,netdev=n0 \
    -fw_cfg name=opt/dicom-gw/authorized_keys,file="$WORK/key.pub" \
    -fw_cfg name=opt/dicom-gw/keep-os-password,file="$WORK/keep" \
    -serial file:"$2" &
  VM_PID=$!
}
vm_running() { [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; }
stop_vm() {  # power off cleanly when possible; kill qemu after a deadline
  vm_running || { VM_PID=""; return 0; }
  [ -n "$OS_PW" ] && root "systemctl poweroff" >/dev/null 2>&1
  local t0=$SECONDS
  while vm_running && (( SECONDS - t0 < 120 )); do sleep 1; done
  vm_running && kill "$VM_PID" 2>/dev/null
  wait "$VM_PID" 2>/dev/null; VM_PID=""
}
wait_ssh() {  # poll SSH until it answers or the deadline passes (qemu exiting ends it early)
  local t0=$SECONDS
  until vm true 2>/dev/null; do
    vm_running || { echo "      qemu exited"; return 1; }
    (( SECONDS - t0 > BOOT_TIMEOUT )) && return 1
    sleep 3
  done
}
wait_for() {  # wait_for SECONDS COMMAND...: poll a condition on the host until a deadline
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do (( SECONDS > deadline )) && return 1; sleep 2; done
}
os_password() {  # firstboot shows the one-time console password on the serial console
  sed -n "s/.*Console login: *$USER_NAME \/ \([^ ]*\).*/\1/p" "$1" | tail -1 | tr -d '\r'
}
boot() {  # boot DISK SERIALLOG LABEL: start, wait for SSH and for the first boot to finish
  local t0=$SECONDS
  start_vm "$1" "$2"
  if ! wait_ssh; then bad "$3: boot to SSH"; tail -30 "$2"; return 1; fi
  ok "$3: boot to SSH ($((SECONDS - t0)) s, $ACCEL)"
  # The unit prints the password after the secrets are made; it is the last thing it does.
  wait_for 600 grep -q "Console login: *$USER_NAME" "$2" || { bad "$3: firstboot printed no console password"; return 1; }
  OS_PW=$(os_password "$2")
  ok "$3: firstboot printed a one-time console password"
  root "timeout 600 systemctl is-system-running --wait" >/dev/null 2>&1
  return 0
}
# Hashes of the per-machine secrets, one "NAME HASH" line each (hashes only: never the secrets).
secrets_fingerprint() {
  root 'for f in /etc/dicom-gw/secrets/jwt.key /etc/dicom-gw/secrets/phi.key /etc/dicom-gw/secrets/db.password \
          /etc/dicom-gw/private/db-owner.password /etc/dicom-gw/private/admin.password \
          /etc/dicom-gw/private/os-user.password /etc/ssh/ssh_host_ed25519_key /etc/ssl/dicom-gw/privkey.pem \
          /etc/luks-keys/dicom-gw-storage.key; do
          printf "%s %s\n" "$f" "$(sha256sum < "$f" | cut -d" " -f1)"; done
        printf "luks-volume-uuid %s\n" "$(cryptsetup luksUUID /var/lib/dicom-gw-luks/storage.luks)"
        printf "luks-volume-key %s\n" "$(cryptsetup luksDump --dump-json-metadata /var/lib/dicom-gw-luks/storage.luks | sha256sum | cut -d" " -f1)"'
}

echo "image-test: $IMAGE ($ACCEL); ports ssh $SSH_PORT, https $HTTPS_PORT, dicom $HOST_DICOM_PORT, sink $SINK_PORT"

# --- First VM: a fresh copy of the image -----------------------------------------------------
qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE" "$WORK/vm1.qcow2"
boot "$WORK/vm1.qcow2" "$WORK/serial1.log" "first copy" || exit 1
check "firstboot finished and disabled itself" root "test -e /var/lib/dicom-gw-firstboot/done && ! systemctl is-enabled -q dicom-gw-firstboot"
check "first admin's password in a root-only file" root "test \$(stat -c %a:%U /etc/dicom-gw/private/admin.password) = 600:root && test -s /etc/dicom-gw/private/admin.password"
check "no failed units" root "systemctl list-units --failed --plain --no-legend | grep . && exit 1; true"
check "every gateway unit active" root "units=\$(systemctl list-units --all --plain --no-legend 'dicom-gw-*' | awk '{print \$1}' | grep -v firstboot)
  for u in dicom-gw-scp.service dicom-gw-api.service dicom-gw-dbpool.service dicom-gw-cleanup.service; do
    echo \"\$units\" | grep -qx \$u || { echo \"missing \$u\"; exit 1; }; done
  echo \"\$units\" | grep -q '^dicom-gw-ingest@' && echo \"\$units\" | grep -q '^dicom-gw-forward@' || { echo 'no ingest/forward worker'; exit 1; }
  for u in \$units; do
    # A service its timer starts (the nightly backup) is inactive between runs: its timer must be active.
    t=\$(systemctl show -p TriggeredBy --value \$u); case \$t in *.timer) u=\$t;; esac
    systemctl is-active -q \$u || { echo \"\$u: \$(systemctl is-active \$u)\"; exit 1; }; done
  echo \"\$units\" | wc -l"
# auditctl -l shows a watch's key as "-k KEY" and a syscall rule's as "-F key=KEY".
check "auditd active, rules loaded and immutable" root "systemctl is-active -q auditd && auditctl -l | grep -Eq -- '(-k |key=)dicom-gw-config\$' && auditctl -l | grep -Eq -- '(-k |key=)dicom-gw-secrets\$' && auditctl -s | grep -qx 'enabled 2'"
check "audit event for a write to the config" root "echo '# image-test: audit check' >> /etc/dicom-gw/gateway.toml
  for i in \$(seq 30); do ausearch --input-logs -k dicom-gw-config -f /etc/dicom-gw/gateway.toml -ts recent 2>/dev/null | grep -q 'gateway.toml' && exit 0; sleep 1; done; exit 1"
check "AppArmor enabled, every profile enforcing" root "aa-status --enabled && test \$(aa-status --complaining) -eq 0 && test \$(aa-status --enforced) -gt 0"
check "nftables: input policy drop, only 22/80/443/$DICOM_PORT accepted" root "
  nft list ruleset > /run/nft.txt
  grep -Eq 'hook input priority [a-z0-9-]+; policy drop;' /run/nft.txt || { echo 'input policy is not drop'; exit 1; }
  ports=\$(grep -oE 'dport (\\{[^}]*\\}|[0-9]+)' /run/nft.txt | grep -oE '[0-9]+' | sort -un | tr '\\n' ' ')
  echo \"accepted ports: \$ports\"; for p in \$ports; do case \$p in 22|80|443|$DICOM_PORT) ;; *) exit 1;; esac; done"
check "only those ports listen beyond loopback" root "
  ports=\$(ss -Hltn | awk '{print \$4}' | grep -vE '^(127\\.[0-9.]+|\\[::1\\]|\\[::ffff:127\\.[0-9.]+\\])(%lo)?:' | sed 's/.*://' | sort -un | tr '\\n' ' ')
  echo \"listening: \$ports\"; for p in \$ports; do case \$p in 22|80|443|$DICOM_PORT) ;; *) exit 1;; esac; done"
check "/tmp, /dev/shm, /var/tmp, /var/log, /var/log/audit mounted nodev,nosuid,noexec" root "
  for m in /tmp /dev/shm /var/tmp /var/log /var/log/audit; do o=\$(findmnt -no OPTIONS \$m) || { echo \"\$m not mounted\"; exit 1; }
    for x in nodev nosuid noexec; do echo \$o | tr , '\\n' | grep -qx \$x || { echo \"\$m: \$o\"; exit 1; }; done; done"
check "data volume is LUKS2, opened at boot from crypttab, mounted nodev,nosuid,noexec" root "
  cryptsetup status dicom-gw-storage | grep -Eq 'type: +LUKS2' && grep -q '^dicom-gw-storage ' /etc/crypttab \
  && systemctl is-active -q 'systemd-cryptsetup@dicom\\x2dgw\\x2dstorage.service' \
  && test \"\$(findmnt -no SOURCE /var/lib/dicom-gw/storage)\" = /dev/mapper/dicom-gw-storage \
  && for x in nodev nosuid noexec; do findmnt -no OPTIONS /var/lib/dicom-gw/storage | tr , '\\n' | grep -qx \$x || exit 1; done"
check "HTTPS serves the UI" bash -c "curl -skf --max-time 30 https://127.0.0.1:$HTTPS_PORT/ | grep -qi '<html'"

# DICOM round trip: storescu on this host -> the VM's gateway -> storescp on this host.
if command -v storescp >/dev/null && command -v storescu >/dev/null && command -v dump2dcm >/dev/null; then
  mkdir -p "$WORK/sink" "$WORK/in"
  storescp -aet SINK -od "$WORK/sink" "$SINK_PORT" >"$WORK/storescp.log" 2>&1 & SINK_PID=$!
  sample="$WORK/in/sample.dcm"
  printf '%s\n' '(0008,0016) UI =SecondaryCaptureImageStorage' '(0008,0018) UI [1.2.826.0.1.3680043.8.498.77.1]' \
    '(0008,0060) CS [OT]' '(0010,0010) PN [Image^Test]' '(0010,0020) LO [IMGTEST1]' \
    '(0020,000d) UI [1.2.826.0.1.3680043.8.498.77.2]' '(0020,000e) UI [1.2.826.0.1.3680043.8.498.77.3]' \
    '(7fe0,0010) OB 00\01\02\03\04\05\06\07\08\09\0a\0b\0c\0d\0e\0f' \
    > "$WORK/in/sample.dump"
  dump2dcm +te "$WORK/in/sample.dump" "$sample" >/dev/null 2>&1
  cli="runuser -u dicom-gw -- /opt/dicom-gw/venv/bin/dicom-gw --config /etc/dicom-gw/gateway.toml"
  check "DICOM: destination and rule to the host's sink" root "$cli destination add image-test-sink --ae-title SINK --host 10.0.2.2 --port $SINK_PORT && $cli rule add image-test-all --to image-test-sink"
  check "DICOM: C-STORE to the gateway accepted" storescu -aet IMAGETEST -aec DICOM_GW 127.0.0.1 "$HOST_DICOM_PORT" "$sample"
  sink_has_file() { [ -n "$(find "$WORK/sink" -type f -print -quit)" ]; }
  if wait_for 180 sink_has_file; then
    got=$(find "$WORK/sink" -type f | head -1)
    check "DICOM round trip keeps the dataset's bytes identical" python3 - "$sample" "$got" <<'PY'
import struct, sys
def dataset(path):  # the bytes after the preamble and the File Meta Information group
    b = open(path, "rb").read()
    assert b[128:132] == b"DICM", path
    (glen,) = struct.unpack("<I", b[132 + 8:132 + 12])
    return b[132 + 12 + glen:]
a, b = dataset(sys.argv[1]), dataset(sys.argv[2])
print(f"sent {len(a)} dataset bytes, received {len(b)}")
sys.exit(0 if a == b else 1)
PY
  else
    bad "DICOM round trip: nothing reached the sink in 180 s"
    root "$cli queue list 2>&1 | tail -5; journalctl -u 'dicom-gw-forward@*' -n 10 --no-pager" 2>&1 | sed 's/^/      /'
  fi
else
  bad "DICOM round trip (dcmtk's storescp, storescu and dump2dcm are needed on the host)"
fi

# --- Scanners no one here wrote --------------------------------------------------------------
# OpenSCAP: ssg-debian in Debian 12 (0.1.65) ships content for Debian 10 and 11 only. The
# closest is the Debian 11 datastream's "standard" profile; its platform check (the CPE
# /etc/debian_version =~ ^11) marks every rule "not applicable" on Debian 12, so a copy with
# that one pattern widened to 12 is evaluated. The rules and their checks are unchanged.
if [ "$SCANNERS" = skip ]; then
  echo "SKIP  OpenSCAP and Lynis (SCANNERS=skip)"
else
  t0=$SECONDS
  root 'ds=/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml; test -f $ds || { echo "OpenSCAP: no ssg-debian content"; exit 0; }
    mkdir -p /root/scan && sed "s/\^11\.\[0-9\]+\\$/^1[12].[0-9]+\$/" $ds > /root/scan/ds.xml
    oscap xccdf eval --profile xccdf_org.ssgproject.content_profile_standard --results /root/scan/results.xml \
      /root/scan/ds.xml > /root/scan/oscap.txt 2>/root/scan/oscap.err
    awk "/^Rule/ {r=\$2} /^Result/ {n[\$2]++; if (\$2 == \"fail\" || \$2 == \"error\") f[r]=\$2}
      END {a = n[\"pass\"] + n[\"fail\"] + n[\"error\"]
           printf \"OpenSCAP (ssg-debian11 standard profile on Debian 12): %d of %d applicable rules pass (%.1f%%); fail %d, error %d, notapplicable %d, notchecked %d\n\",
             n[\"pass\"], a, a ? 100 * n[\"pass\"] / a : 0, n[\"fail\"], n[\"error\"], n[\"notapplicable\"], n[\"notchecked\"]
           for (x in f) printf \"  %s: %s\n\", f[x], x}" /root/scan/oscap.txt' | tee "$WORK/oscap.txt"
  echo "      (OpenSCAP took $((SECONDS - t0)) s)"
  oscap_pct=$(sed -n 's/^OpenSCAP .*rules pass (\([0-9.]*\)%).*/\1/p' "$WORK/oscap.txt")
  # Every failing rule must be one of the documented exceptions (packer/oscap-exceptions.txt, each
  # explained in docs/compliance.md): a new failure is a regression of the image's hardening.
  undocumented() {
    [ -n "$oscap_pct" ] || { echo "no OpenSCAP result"; return 1; }
    local rules; rules=$(sed -n 's/^  \(fail\|error\): xccdf_org\.ssgproject\.content_rule_//p' "$WORK/oscap.txt" \
      | grep -vxF -f <(grep -v '^#' "$(dirname "$0")/oscap-exceptions.txt") || true)
    [ -z "$rules" ] || { echo "failing, not in oscap-exceptions.txt: $rules"; return 1; }
  }
  check "OpenSCAP: no failing rule beyond the documented exceptions (${oscap_pct:-no result} % pass)" undocumented
  score "OpenSCAP pass rate" "${oscap_pct:-}" "$OSCAP_TARGET" "%"
  t0=$SECONDS
  root 'command -v lynis >/dev/null || { echo "Lynis: not installed"; exit 0; }
    lynis audit system --quick --no-colors --logfile /root/scan/lynis.log --report-file /root/scan/lynis-report.dat > /root/scan/lynis.txt 2>&1
    echo "Lynis: hardening index $(sed -n "s/^hardening_index=//p" /root/scan/lynis-report.dat) ($(sed -n "s/^lynis_tests_done=//p" /root/scan/lynis-report.dat) tests)"
    sed -n "s/^warning\[\]=/  warning: /p; s/^suggestion\[\]=/  suggestion: /p" /root/scan/lynis-report.dat' | tee "$WORK/lynis.txt"
  echo "      (Lynis took $((SECONDS - t0)) s)"
  lynis_index=$(sed -n 's/^Lynis: hardening index \([0-9]*\) .*/\1/p' "$WORK/lynis.txt")
  check "Lynis: a hardening index was reported (${lynis_index:-no result})" test -n "${lynis_index:-}"
  score "Lynis hardening index" "${lynis_index:-}" "$LYNIS_TARGET" ""
  if [ -n "${SCAN_OUT:-}" ]; then mkdir -p "$SCAN_OUT" && cp "$WORK/oscap.txt" "$WORK/lynis.txt" "$SCAN_OUT/"; fi
fi

# --- Reboot: the volume opens from crypttab again, data intact --------------------------------
before=$(secrets_fingerprint)
boot_id=$(vm cat /proc/sys/kernel/random/boot_id)
root "echo persisted-\$(date +%s) > /var/lib/dicom-gw/storage/.image-test && sha256sum /var/lib/dicom-gw/storage/.image-test > /root/image-test.sum" \
  || bad "write a file on the data volume"
t0=$SECONDS
root "systemctl reboot" >/dev/null 2>&1
new_boot() { local id; id=$(vm cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ -n "$id" ] && [ "$id" != "$boot_id" ]; }
if wait_for "$BOOT_TIMEOUT" new_boot; then
  ok "reboot to SSH ($((SECONDS - t0)) s)"
  root "timeout 600 systemctl is-system-running --wait" >/dev/null 2>&1
  check "data volume opened at boot and its data intact after the reboot" root "cryptsetup status dicom-gw-storage | grep -Eq 'type: +LUKS2' && sha256sum -c --quiet /root/image-test.sum"
  check "no failed units after the reboot" root "systemctl list-units --failed --plain --no-legend | grep . && exit 1; true"
  check "firstboot did not run again" root "! systemctl is-active -q dicom-gw-firstboot && test \$(journalctl -b -u dicom-gw-firstboot -q --no-pager | wc -l) -eq 0"
else
  bad "reboot to SSH"; tail -20 "$WORK/serial1.log"
fi
stop_vm

# --- Second VM: another fresh copy; none of its secrets may equal the first copy's ------------
qemu-img create -q -f qcow2 -F qcow2 -b "$IMAGE" "$WORK/vm2.qcow2"
if boot "$WORK/vm2.qcow2" "$WORK/serial2.log" "second copy"; then
  after=$(secrets_fingerprint)
  check "firstboot secrets differ between two copies of the image" python3 - "$before" "$after" <<'PY'
import sys
a = dict(l.split(" ", 1) for l in sys.argv[1].splitlines() if " " in l)
b = dict(l.split(" ", 1) for l in sys.argv[2].splitlines() if " " in l)
names = sorted(set(a) | set(b))
bad = [n for n in names if not a.get(n) or not b.get(n) or len(a[n]) < 32 or a[n] == b[n]]
print(f"{len(names) - len(bad)} of {len(names)} secrets differ" + (f"; same or missing: {bad}" if bad else ""))
sys.exit(1 if bad else 0)
PY
fi
stop_vm
echo "image-test took $((SECONDS - T_START)) s"
echo "image-test: $PASS passed, $FAIL failed; $BELOW scanner score(s) below target (SCORE_TARGETS=$SCORE_TARGETS)"
[ "$FAIL" -eq 0 ]
