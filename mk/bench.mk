# The benchmark (issue 8): dicom-gw beside dcmtk storescp and Orthanc. See docs/performance.md.
#
#   make bench         full sizes, 3 runs; finishes unattended in under 15 minutes
#                      (the harness cuts later runs if run 1 shows they would not fit)
#   make bench-quick   small data, 1 run: a smoke test of a minute or two
#
# Included by the main Makefile, which provides `venv` (.venv with dicom-gw installed). Alone:
#   make -f mk/bench.mk bench-quick BENCH_NEEDS=
# Extra harness arguments: make bench BENCH_ARGS="--systems storescp,gateway --runs 5"

BENCH_NEEDS ?= venv
BENCH_BASE_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BENCH_VENV ?= var/bench/venv
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-deps bench-tools bench-data

# The harness's venv, on the project's interpreter: numpy and pydicom for the data generator.
$(BENCH_VENV)/.installed: tests/perf/requirements.txt
	$(BENCH_BASE_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet --disable-pip-version-check -r tests/perf/requirements.txt
	touch $@

# dcmtk (senders, storescp, the sink) and Orthanc from Debian's packages. Debian's orthanc package
# enables and starts its own service where systemd runs: the benchmark starts its own instances on
# free ports, so a service this target just installed is stopped and disabled again.
bench-tools: ## install dcmtk and Orthanc (Debian packages) for the benchmark if missing
	@missing=""; \
	command -v storescu >/dev/null 2>&1 || missing="$$missing dcmtk"; \
	command -v Orthanc >/dev/null 2>&1 || missing="$$missing orthanc"; \
	if [ -n "$$missing" ]; then \
	  echo "bench: installing$$missing"; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	  case "$$missing" in *orthanc*) \
	    if [ -d /run/systemd/system ]; then systemctl disable --now orthanc || true; fi;; \
	  esac; \
	fi

bench-deps: $(BENCH_NEEDS) bench-tools $(BENCH_VENV)/.installed ## everything the benchmark needs

# Generate (once, cached in var/bench-data) the data sets of both sizes.
bench-data: $(BENCH_VENV)/.installed ## generate the benchmark data (cached in var/bench-data)
	$(BENCH_PY) -m tests.perf.datagen --quick
	$(BENCH_PY) -m tests.perf.datagen

bench: bench-deps ## full benchmark beside dcmtk and Orthanc (< 15 min), table in tests/perf/results/latest.md
	$(BENCH_PY) -m tests.perf.bench $(BENCH_ARGS)

bench-quick: bench-deps ## short benchmark on small data (1-2 min)
	$(BENCH_PY) -m tests.perf.bench --quick $(BENCH_ARGS)
