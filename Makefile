# tcpstack: the two commands of the quick start are `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TSTAMP  := $(VENV)/.installed-test

.PHONY: demo test lint deps-debian clean diagram

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP) $@

demo: $(STAMP)
	$(BIN)/tcpstack demo

# Debian packages the tests need: tshark (an independent dissector of our pcaps),
# iproute2 (ip netns, tc netem), curl (interop peer), procps, tcpdump (kernel
# captures for the trace tests), librsvg2-bin (rsvg-convert: SVG ladders checked as pictures).
deps-debian:
	@if ! command -v tshark >/dev/null || ! command -v ip >/dev/null || ! command -v curl >/dev/null || ! command -v ss >/dev/null || ! command -v tcpdump >/dev/null || ! command -v rsvg-convert >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make test needs root to apt-get install tshark iproute2 curl tcpdump librsvg2-bin" >&2; exit 1; fi; \
	  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tshark iproute2 curl procps tcpdump librsvg2-bin >/dev/null; \
	fi

lint: $(TSTAMP)
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/mypy

test: $(TSTAMP) deps-debian
	$(BIN)/lint-imports
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis

# The state diagram is generated from tcp/state.py's TRANSITIONS (a test checks it is current).
diagram: $(STAMP)
	$(BIN)/python -m tcpstack.tcp.state > docs/state-diagram.dot
	@if command -v dot >/dev/null; then dot -Tsvg docs/state-diagram.dot -o docs/state-diagram.svg; fi
