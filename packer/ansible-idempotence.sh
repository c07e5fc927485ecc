#!/bin/bash
# ansible-playbook for the second run of playbooks/appliance.yml in the Packer build (the ansible
# provisioner's `command`): the same playbook against the same VM must change nothing. Passes
# every argument to ansible-playbook, keeps the output in IDEMPOTENCE_LOG, and fails when a task
# reported a change. DICOM_GW_IDEMPOTENCE: strict (default) fails, report only prints the changed
# tasks, off skips the second run (it costs most of the first run's time under TCG).
set -uo pipefail
if [ "${1:-}" = "--version" ]; then exec ansible-playbook "$@"; fi  # Packer's version probe
mode=${DICOM_GW_IDEMPOTENCE:-strict}
if [ "$mode" = off ]; then echo "idempotence: second run skipped (DICOM_GW_IDEMPOTENCE=off)"; exit 0; fi
t0=$SECONDS
log=${IDEMPOTENCE_LOG:?IDEMPOTENCE_LOG: where to keep the output (the recap is read from it)}
ansible-playbook "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"
echo "idempotence: second run took $((SECONDS - t0)) s"
changed=$(grep -E '^[^ ]+ +: ok=' "$log" | sed -n 's/.* changed=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
if [ "$changed" -ne 0 ]; then
  echo "idempotence: FAIL, the second run changed $changed task(s):"
  awk '/^(TASK|RUNNING HANDLER) \[/ {t=$0} /^changed: / {print "  " t}' "$log" | uniq
  [ "$mode" = report ] || exit 1
else
  echo "idempotence: PASS, the second run of appliance.yml changed nothing"
fi
