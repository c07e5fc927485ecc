#!/bin/bash
# ansible-playbook for the second run of playbooks/appliance.yml in the Packer build (the ansible
# provisioner's `command`): the same playbook against the same VM must change nothing. Passes
# every argument to ansible-playbook, keeps the output in IDEMPOTENCE_LOG and the verdict (PASS or
# FAIL and the changed tasks) in IDEMPOTENCE_LOG.verdict. A changed task does not stop Packer: the
# image is finished and kept for inspection, and `make image` fails afterwards on a FAIL verdict
# when DICOM_GW_IDEMPOTENCE is strict (default); report only prints it; off skips the second run
# (it costs most of the first run's time under TCG). A failed task fails the build as before.
set -uo pipefail
if [ "${1:-}" = "--version" ]; then exec ansible-playbook "$@"; fi  # Packer's version probe
mode=${DICOM_GW_IDEMPOTENCE:-strict}
log=${IDEMPOTENCE_LOG:?IDEMPOTENCE_LOG: where to keep the output (the recap is read from it)}
verdict=$log.verdict
if [ "$mode" = off ]; then
  echo "idempotence: second run skipped (DICOM_GW_IDEMPOTENCE=off)" | tee "$verdict"; exit 0
fi
t0=$SECONDS
ansible-playbook "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || exit "$rc"
echo "idempotence: second run took $((SECONDS - t0)) s"
changed=$(grep -E '^[^ ]+ +: ok=' "$log" | sed -n 's/.* changed=\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
if [ "$changed" -ne 0 ]; then
  { echo "idempotence: FAIL, the second run changed $changed task(s):"
    awk '/^(TASK|RUNNING HANDLER) \[/ {t=$0} /^changed: / {print "  " t}' "$log" | uniq; } | tee "$verdict"
else
  echo "idempotence: PASS, the second run of appliance.yml changed nothing" | tee "$verdict"
fi
