# The appliance VM image (Packer + qemu under TCG) and its boot test. Included by the Makefile.
#   make image        base disk (mmdebstrap, offline but for Debian's mirror) + packer build:
#                     packer/output/dicom-gw.qcow2, dicom-gw.vmdk, SHA256SUMS
#   make image-test   boot fresh copies of the image in qemu and check it (packer/image-test.sh)
IMAGE_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
IMAGE_BUILD_DIR ?= $(IMAGE_ROOT)/packer/.build
IMAGE_OUTPUT_DIR ?= $(IMAGE_ROOT)/packer/output
IMAGE_ACCELERATOR ?= tcg
# The build runs appliance.yml a second time; strict: make image fails when that run changed
# anything (after Packer finished: the image is kept to inspect); report only prints the changed
# tasks; off skips that run (it costs most of the first run's time).
IMAGE_IDEMPOTENCE ?= strict
IMAGE_APT_PACKAGES ?= packer qemu-system-x86 qemu-utils mmdebstrap fdisk e2fsprogs openssh-client \
	cryptsetup-bin dcmtk curl

.PHONY: image image-deps image-base image-test image-clean

image-deps:
	@missing=""; for p in $(IMAGE_APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(IMAGE_BUILD_DIR)/base.qcow2: $(IMAGE_ROOT)/packer/build-base-disk.sh
	$(IMAGE_ROOT)/packer/build-base-disk.sh $(IMAGE_BUILD_DIR)

image-base: image-deps $(IMAGE_BUILD_DIR)/base.qcow2 ## the Debian 12 base disk for Packer

image: image-base ansible-deps frontend-build ## build the appliance VM image (qcow2 + vmdk + SHA256SUMS)
	rm -rf $(IMAGE_OUTPUT_DIR) $(IMAGE_BUILD_DIR)/idempotence.log $(IMAGE_BUILD_DIR)/idempotence.log.verdict
	@t0=$$(date +%s); cd $(IMAGE_ROOT) && PATH=$(ANSIBLE_BIN):$$PATH CHECKPOINT_DISABLE=1 \
	  PACKER_LOG=$${PACKER_LOG:-0} packer build -color=false -var build_dir=$(IMAGE_BUILD_DIR) \
	  -var output_dir=$(IMAGE_OUTPUT_DIR) -var root_uuid=$$(cat $(IMAGE_BUILD_DIR)/root.uuid) \
	  -var accelerator=$(IMAGE_ACCELERATOR) -var idempotence=$(IMAGE_IDEMPOTENCE) \
	  -var mitogen_strategy_plugins=$$($(ANSIBLE_BIN)/python -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')/plugins/strategy \
	  packer/dicom-gw.pkr.hcl \
	  && echo "packer build took $$(( $$(date +%s) - t0 )) s"
	@cat $(IMAGE_OUTPUT_DIR)/SHA256SUMS; ls -l $(IMAGE_OUTPUT_DIR)
	@cat $(IMAGE_BUILD_DIR)/idempotence.log.verdict 2>/dev/null || true
	@if [ "$(IMAGE_IDEMPOTENCE)" = strict ] && grep -q FAIL $(IMAGE_BUILD_DIR)/idempotence.log.verdict 2>/dev/null; then \
	  echo "make image: the idempotence run changed tasks (image kept in $(IMAGE_OUTPUT_DIR))"; exit 1; fi

image-test: image-deps ## boot the image in qemu and verify it (services, audit, LUKS, TLS, DICOM, scanners)
	@test -f $(IMAGE_OUTPUT_DIR)/dicom-gw.qcow2 || { echo "no image: run make image"; exit 1; }
	$(IMAGE_ROOT)/packer/image-test.sh $(IMAGE_OUTPUT_DIR)/dicom-gw.qcow2

image-clean:
	rm -rf $(IMAGE_OUTPUT_DIR) $(IMAGE_BUILD_DIR)

# make test (CI): every apt install first (one dpkg at a time) and the web UI built (the image
# ships it, the suite tests it; built once, before both start), then `make image` in its own
# session in the background while make test-suite runs in the foreground; a failed suite stops
# the build. The build's log is kept in var/ and its task timing printed; then make image-test.
# The build's second, idempotence run of the playbook is strict here too: with Mitogen it costs
# a few minutes, not the 17 it took with a new SSH session per task.
TEST_IMAGE_IDEMPOTENCE ?= strict
TEST_IMAGE_LOG ?= $(IMAGE_ROOT)/var/image-build.log

.PHONY: test-beside-image
test-beside-image:
	$(MAKE) --no-print-directory system-deps browser-deps frontend-build ansible-deps image-deps
	@mkdir -p $(dir $(TEST_IMAGE_LOG)); rm -f $(TEST_IMAGE_LOG).rc; \
	setsid bash -c '$(MAKE) --no-print-directory image IMAGE_IDEMPOTENCE=$(TEST_IMAGE_IDEMPOTENCE) \
	  >$(TEST_IMAGE_LOG) 2>&1; echo $$? >$(TEST_IMAGE_LOG).rc' & build=$$!; \
	echo "== make image runs beside make test-suite (session $$build, log $(TEST_IMAGE_LOG))"; \
	if ! $(MAKE) --no-print-directory test-suite; then \
	  echo "== make test-suite failed: stopping the image build"; kill -TERM -- -$$build 2>/dev/null; \
	  wait $$build; exit 1; \
	fi; \
	echo "== make test-suite passed; waiting for make image"; wait $$build; \
	rc=$$(cat $(TEST_IMAGE_LOG).rc 2>/dev/null || echo 1); \
	grep -E 'packer build took|PLAY RECAP|idempotence: ' -A1 $(TEST_IMAGE_LOG); \
	sed -n '/TASKS RECAP/,/^==>/p' $(TEST_IMAGE_LOG) | head -25; \
	if [ "$$rc" != 0 ]; then echo "== make image failed ($$rc); the end of its log:"; tail -80 $(TEST_IMAGE_LOG); exit 1; fi
	$(MAKE) --no-print-directory image-test
