# Web UI (Vue 3 + Vite, in frontend/). Included by the top-level Makefile; paths are relative to
# this file, so it works from any clone (as root, on Debian 12).
#
#   make frontend-deps    Node.js and npm (Debian's, only when `node` is missing) + npm ci
#   make frontend-build   vite build → frontend/dist/ (served at / by nginx or the API), only when
#                         a source changed
#   make frontend-test    Vitest unit tests (stores and components, happy-dom)

FRONTEND_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
FRONTEND_DIR := $(FRONTEND_ROOT)/frontend
FRONTEND_STAMP := $(FRONTEND_DIR)/node_modules/.dicom-gw-installed
# Vite 8 needs Node.js ^20.19 or >= 22.12.
FRONTEND_NODE_CHECK := const [a,b]=process.versions.node.split(".").map(Number); \
	process.exit(a>22||(a===22&&b>=12)||(a===20&&b>=19)?0:1)
# --include: even with NODE_ENV=production or omit=optional in an npm config, install the build
# tools and every platform's optional native binding recorded in the lockfile.
FRONTEND_NPM_CI := npm ci --no-audit --no-fund --include=dev --include=optional

.PHONY: frontend-node frontend-deps frontend-build frontend-test

frontend-node:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  echo "apt-get install nodejs npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; \
	fi
	@node -e '$(FRONTEND_NODE_CHECK)' || { \
	  echo "frontend: Node.js $$(node --version) is too old; Vite 8 needs ^20.19 or >= 22.12" >&2; exit 1; }

$(FRONTEND_STAMP): $(FRONTEND_DIR)/package.json $(FRONTEND_DIR)/package-lock.json | frontend-node
	cd $(FRONTEND_DIR) && $(FRONTEND_NPM_CI)
	touch $@

frontend-deps: $(FRONTEND_STAMP) ## Node.js + npm ci in frontend/

# A file target, not a rebuild each time: the image build (make test runs it beside the suite)
# ships frontend/dist while the suite's end-to-end tests need it too, and a rebuild under a
# running build would empty the directory and change every file's time.
FRONTEND_SOURCES := $(shell find $(FRONTEND_DIR)/src $(FRONTEND_DIR)/public -type f 2>/dev/null) \
	$(wildcard $(FRONTEND_DIR)/index.html $(FRONTEND_DIR)/vite.config.js)
$(FRONTEND_DIR)/dist/index.html: $(FRONTEND_STAMP) $(FRONTEND_SOURCES)
	cd $(FRONTEND_DIR) && npm run build
	touch $@

frontend-build: $(FRONTEND_DIR)/dist/index.html ## build the web UI into frontend/dist/ (when a source changed)

frontend-test: frontend-deps ## web UI unit tests (Vitest)
	cd $(FRONTEND_DIR) && npm test
