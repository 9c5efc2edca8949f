# Two entry points do all the set-up on a fresh machine (Python >= 3.11 with venv):
#   make run    the main job: the live Fairwater twin for 2 simulated hours, reported from
#               its history -> out/fairwater
#   make test   the whole test suite (slow tests included), as CI runs it
#   make image  the container image ai-factory-twin:dev (JAX_VARIANT=cuda: :dev-cuda)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean proto image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/twin up scenarios/fairwater-wi.yaml --duration 2h --dt 10s --report out/fairwater

test: $(STAMP)
	@# A real MQTT broker for the gateway's external-broker tests (they skip without it).
	@command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto; } >/dev/null 2>&1 || echo "mosquitto not installed: the external MQTT broker tests skip"
	@# Prometheus and promtool for the alert rule and scrape tests (they skip without them).
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus; } >/dev/null 2>&1 || echo "prometheus not installed: the alert rule and scrape tests skip"
	@# A headless browser for the web console's tests (they skip without it).
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 || echo "chromium not installed: the console's browser tests skip"
	@# buildah, podman (runc) and debootstrap for the image build and the container tests.
	@command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq buildah podman runc debootstrap; } >/dev/null 2>&1 || echo "buildah/podman/runc/debootstrap not installed: the container image tests skip"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pyright --pythonpath $(BIN)/python
	TWIN_IMAGE_BUILD_EARLY=1 $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10

# buildah (or docker), from python:3.11-slim or a debootstrap base; image/build.sh says how.
image: $(STAMP)
	PYTHON=$(BIN)/python JAX_VARIANT=$(or $(JAX_VARIANT),cpu) image/build.sh

bench: $(STAMP)
	$(BIN)/python bench/model.py

# Regenerate proto/gen/python from proto/twin (commit the result); lint with buf.
proto: $(STAMP)
	test -x node_modules/.bin/buf || npm ci --silent --no-audit --no-fund
	node_modules/.bin/buf format -w proto
	node_modules/.bin/buf lint proto
	$(BIN)/python proto/generate.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
