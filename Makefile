# isometer's developer entry point. `make demo` and `make test` install what is missing.

CARGO ?= cargo
GUESTS := --manifest-path guests/Cargo.toml --target wasm32-wasip1 --target-dir target/guests --release
SUITE ?= all

.PHONY: all deps guests build demo test lint bench clean

all: build

## deps: install clickhouse-server, the wasm32-wasip1 target, rustfmt and clippy if missing
deps:
	@scripts/install-deps.sh

## guests: build the tool modules in guests/ for wasm32-wasip1 (target/guests)
guests: deps
	$(CARGO) build $(GUESTS)

build: guests
	$(CARGO) build

## demo: start a local ClickHouse, run a week of multi-tenant work, serve the dashboard
demo: build
	$(CARGO) run --quiet -- demo

## test: formatting, lints and the whole test suite (browser and API-document tests included)
test: lint
	@scripts/install-deps.sh test
	$(CARGO) test --workspace

## lint: rustfmt and clippy (-D warnings) over the workspace and the guests
lint: guests
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path guests/Cargo.toml --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy $(GUESTS) -- -D warnings

## bench: benchmarks beside their peers (SUITE=attempt|runtime|ingest|gateway|billing; all by default), JSON in target/bench/
bench: guests
	@scripts/install-deps.sh bench
ifeq ($(SUITE),all)
	$(CARGO) bench --bench attempt
	$(CARGO) bench --bench runtime
	$(CARGO) bench --bench ingest
	$(CARGO) bench --bench gateway
	$(CARGO) bench --bench billing
else
	$(CARGO) bench --bench $(SUITE)
endif

clean:
	$(CARGO) clean
	rm -rf .isometer
