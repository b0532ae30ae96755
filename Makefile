# AeroDB Authority. `make test` is what CI runs (.ci/run).
GO        ?= go
PKGS      := ./...
BIN       := bin
PROTO_DIR := api
PROTOS    := $(wildcard $(PROTO_DIR)/authority/v1/*.proto) $(wildcard $(PROTO_DIR)/refnode/v1/*.proto)
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build test test-short bench proto lint check-rules run demo screenshot clean jepsen jepsen-soak

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Unit, property, script and in-process cluster tests, with the FSM's
# invariant assertions compiled in (build tag `invariants`) and the race
# detector on.
test: lint check-rules
	$(GO) test -tags "invariants failpoints" -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -tags "invariants failpoints jepsen_mutants" -race -count=1 -timeout 10m -run Mutant ./jepsen-like/...

test-short:
	$(GO) test -tags "invariants failpoints" -count=1 $(PKGS)

# The fault-injection cluster's CI mode (jepsen-like/): every scenario once
# with a fixed seed, capped by JEPSEN_BUDGET (default 720s; scenarios past
# it are skipped, saying so), then the negative controls (mutants behind the
# jepsen_mutants tag), each of which must be caught by its checker.
# `make test` also runs the CI mode (go test ./...).
jepsen:
	$(GO) test -tags "invariants failpoints" -race -count=1 -timeout 20m -run TestJepsen ./jepsen-like/
	$(GO) test -tags "invariants failpoints jepsen_mutants" -race -count=1 -timeout 10m -run Mutant ./jepsen-like/...

# Soak: 5 nodes, -race, random overlapping faults, until DURATION has
# passed or the first violation (prints its seed and a one-line repro).
# Reports are kept under $$TMPDIR/jepsen-soak-*; the closing line (seed
# range, or the violation and its reproduction) is printed from
# $$TMPDIR/jepsen-soak-last.txt, since go test hides a passing test's output.
DURATION ?= 30m
jepsen-soak:
	JEPSEN_SOAK=$(DURATION) $(GO) test -tags "invariants failpoints" -race -count=1 -timeout 0 -run TestSoak ./jepsen-like/; \
	status=$$?; cat "$${TMPDIR:-/tmp}/jepsen-soak-last.txt" 2>/dev/null; exit $$status

# Go benchmarks of the hot paths (FSM apply of a promotion attempt and a
# watermark advance, the validator, lease renewal: ns/op and allocs/op), then
# the cluster benchmark against 3 local authorityd processes (promotion
# commit latency p50/p99, renewals/s for 1,000 leases, batched watermark
# advances/s over 100 domains with p99 batch latency). Output also goes to
# bin/bench.txt.
bench:
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./validator ./fsm ./promotion ./replication/refnode | tee $(BIN)/bench.txt
	$(GO) test -run '^$$' -bench . -benchtime=1x -count=1 -timeout 10m ./bench | tee -a $(BIN)/bench.txt

# Regenerate the committed protobuf code (needs protoc: Debian's
# protobuf-compiler).
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I $(PROTO_DIR) \
	  --go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
	  --go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative $(PROTOS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags "invariants failpoints" $(PKGS)

# Validate the Prometheus alerting rules with promtool (Debian: the
# `prometheus` package) when it is installed; skip with a notice otherwise.
check-rules:
	@if command -v promtool >/dev/null 2>&1; then \
	  promtool check rules deploy/observability/prometheus-rules.yml; \
	else \
	  echo "promtool not installed; skipping rule check"; \
	fi

# A local 3-node cluster (three authorityd processes on 127.0.0.1, data
# under ./.data) with a seeded demo domain; Ctrl-C stops it cleanly.
run: build
	$(BIN)/authority-local -bin $(BIN) -data .data

# The AeroDB reference-node demo (docs/DEMO.md): three authorityd processes
# (same ports as `make run`), three refnodes on 127.0.0.1:6001-6003 and a
# writer printing every acknowledged write; state under ./.demo (wiped at
# start). Ctrl-C stops it.
demo: build
	$(BIN)/refnode demo --bin $(BIN) --data .demo

# Render the status page of the demo cluster to docs/status-page.png with
# headless Chromium (Debian: chromium). Not part of CI.
screenshot: build
	scripts/screenshot.sh

clean:
	rm -rf $(BIN) .data
