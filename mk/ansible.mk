# Ansible deployment: tools, lint and Molecule. Included by the top-level Makefile; every path is
# relative to the repository, so this works from any clone (as root, on Debian 12).
#
#   make ansible-deps   podman, runc, mmdebstrap (apt, only when missing) + .venv-ansible
#   make lint-ansible   ansible-lint (production profile) and yamllint
#   make molecule       build the Debian 12 systemd image if missing, then `molecule test`
#                       (MOLECULE_SCENARIO=default or distributed)
#   make molecule-all   every scenario in MOLECULE_SCENARIOS, one after the other (make test)

ANSIBLE_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
ANSIBLE_PYTHON ?= python3
ANSIBLE_VENV ?= $(ANSIBLE_ROOT)/.venv-ansible
ANSIBLE_BIN := $(ANSIBLE_VENV)/bin
ANSIBLE_APT_PACKAGES ?= podman runc mmdebstrap uidmap slirp4netns fuse-overlayfs \
	containernetworking-plugins iptables catatonit python3-venv
MOLECULE_IMAGE ?= localhost/dicom-gw-debian12-systemd:latest
MOLECULE_SCENARIO ?= default
# One at a time: the machines are small and the scenarios' timings stay comparable.
MOLECULE_SCENARIOS ?= default distributed
MOLECULE_CONTAINERS_CONF ?= $(ANSIBLE_ROOT)/molecule/containers.conf
ANSIBLE_LINT_PATHS := playbooks roles inventories molecule

.PHONY: ansible-deps ansible-apt-deps lint-ansible molecule molecule-all molecule-image

ansible-apt-deps:
	@missing=""; for p in $(ANSIBLE_APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi

$(ANSIBLE_VENV)/.installed: $(ANSIBLE_ROOT)/molecule/requirements.txt
	$(ANSIBLE_PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_BIN)/python -m pip install --quiet --upgrade pip
	$(ANSIBLE_BIN)/python -m pip install --quiet -r $(ANSIBLE_ROOT)/molecule/requirements.txt
	touch $@

ansible-deps: ansible-apt-deps $(ANSIBLE_VENV)/.installed

lint-ansible: $(ANSIBLE_VENV)/.installed
	cd $(ANSIBLE_ROOT) && PATH=$(ANSIBLE_BIN):$$PATH $(ANSIBLE_BIN)/yamllint --strict \
	  -c molecule/yamllint.yml $(ANSIBLE_LINT_PATHS)
	cd $(ANSIBLE_ROOT) && PATH=$(ANSIBLE_BIN):$$PATH $(ANSIBLE_BIN)/ansible-lint --profile production \
	  -c molecule/ansible-lint.yml $(ANSIBLE_LINT_PATHS)

molecule-image: ansible-apt-deps
	CONTAINERS_CONF=$(MOLECULE_CONTAINERS_CONF) $(ANSIBLE_ROOT)/molecule/build-image.sh $(MOLECULE_IMAGE)

molecule: ansible-deps molecule-image
	cd $(ANSIBLE_ROOT) && PATH=$(ANSIBLE_BIN):$$PATH CONTAINERS_CONF=$(MOLECULE_CONTAINERS_CONF) \
	  MOLECULE_IMAGE=$(MOLECULE_IMAGE) $(ANSIBLE_BIN)/molecule test --scenario-name $(MOLECULE_SCENARIO)

molecule-all: ansible-deps molecule-image
	@for scenario in $(MOLECULE_SCENARIOS); do \
	  echo "== molecule scenario $$scenario"; \
	  $(MAKE) --no-print-directory molecule MOLECULE_SCENARIO=$$scenario || exit 1; \
	done
