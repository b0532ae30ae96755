# AeroDB Authority. `make test` is what CI runs (.ci/run).
GO        ?= go
PKGS      := ./...
BIN       := bin
PROTO_DIR := api
PROTOS    := $(wildcard $(PROTO_DIR)/authority/v1/*.proto) $(wildcard $(PROTO_DIR)/refnode/v1/*.proto)
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
MODULE    := github.com/aerodb/authority

.PHONY: all build test test-short bench proto lint check-rules run demo screenshot clean jepsen jepsen-soak probe-soak

all: build

# Version stamping (internal/version): `authorityctl version` and
# `authorityd --version` print these, the Go version and the platform.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/aerodb/authority/internal/version.Version=$(VERSION) \
	-X github.com/aerodb/authority/internal/version.Commit=$(COMMIT)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# Unit, property, script and in-process cluster tests, with the FSM's
# invariant assertions compiled in (build tag `invariants`) and the race
# detector on; then the negative controls (mutants behind the jepsen_mutants
# tag) of the jepsen-like checkers and of the replica-quorum refnode.
test: lint check-rules fuzz test-modules
	$(GO) test -tags "invariants failpoints" -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -tags "invariants failpoints jepsen_mutants" -race -count=1 -timeout 10m -run Mutant ./jepsen-like/... ./replication/refnode/

# Separate Go modules (their own go.mod, so the product module never
# depends on Kubernetes): the rollouts templates decoded strictly into Argo
# Rollouts' and Flagger's types (docs/ROLLOUTS-TEMPLATES.md), and the
# deployment files (deploy/: Kubernetes manifests and Helm chart decoded
# strictly into the Kubernetes Go types, Dockerfile, systemd unit through
# systemd-analyze verify, compose file).
TEST_MODULES := deploy/rollouts/conformance deploy/kubernetes/conformance
.PHONY: test-modules
test-modules:
	@for m in $(TEST_MODULES); do (cd $$m && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...) || exit 1; done

test-short:
	$(GO) test -tags "invariants failpoints" -count=1 $(PKGS)

# Fuzzing (docs/INTEGRITY.md#fuzzing): each target in FUZZ_TARGETS
# (package:Target) for FUZZTIME, one at a time (go fuzzes one target per
# invocation), with 2 workers, then its executions per second over the
# fuzzing phase (after the seed corpus' baseline). Minimisation is capped
# at 100 runs per input so that it does not eat the time budget. A failing
# input is printed and written to the package's testdata/fuzz/<Target>/;
# every target runs even after a failure, then make fails. Logs:
# $(BIN)/fuzz-<Target>.txt. `make test` runs this.
FUZZTIME     ?= 30s
FUZZ_TARGETS := ./fsm:FuzzApply ./fsm:FuzzRestore ./cluster:FuzzLogEntry ./pipeline/preflight:FuzzParseInventory
# Reads go's "fuzz: elapsed: 6s, ... now fuzzing" and its last
# "fuzz: elapsed: 30s, execs: N (R/sec)" line: N over the fuzzing phase.
FUZZ_RATE    = function secs(d,  t, n, u) { t = 0; \
	  while (match(d, /^[0-9]+[hms]/)) { n = substr(d, 1, RLENGTH - 1) + 0; u = substr(d, RLENGTH, 1); \
	    t += (u == "h" ? 3600 : u == "m" ? 60 : 1) * n; d = substr(d, RLENGTH + 1) } return t } \
	/now fuzzing/ { start = secs($$3) } / execs: / { end = secs($$3); execs = $$5 } \
	/Failing input written to/ { failed = " FAILED, input in " $$NF } \
	END { if (execs == "") { print "no fuzzing phase" (failed == "" ? " (see the log)" : failed); exit } \
	  d = end - start; if (d <= 0) d = 1; printf "%d execs in %ds of fuzzing = %d execs/s%s\n", execs, d, execs / d, failed }

.PHONY: fuzz
fuzz:
	@mkdir -p $(BIN); failed=""; summary=""; \
	for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; log=$(BIN)/fuzz-$$name.txt; \
	  echo "fuzz: $$name ($$pkg) for $(FUZZTIME)"; \
	  { $(GO) test -tags "invariants failpoints" -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) \
	      -fuzzminimizetime 100x -parallel 2 $$pkg; echo $$? >$$log.rc; } 2>&1 | tee $$log; \
	  rate=$$(awk '$(FUZZ_RATE)' $$log); \
	  echo "fuzz: $$name: $$rate"; summary="$$summary$$name: $$rate\n"; \
	  [ "$$(cat $$log.rc)" = 0 ] || failed="$$failed $$name"; rm -f $$log.rc; \
	done; \
	printf "fuzz summary (FUZZTIME=$(FUZZTIME), 2 workers):\n$$summary"; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed (failing inputs: testdata/fuzz/ in the package)"; exit 1; fi

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

# Probe service soak (issue 15): 50 flows at 1 s for $(PROBE_SOAK) on the real
# clock; asserts on-time >= 99.9 % and flat RSS/goroutines (docs/PROBES.md).
PROBE_SOAK ?= 10m
probe-soak:
	PROBE_SOAK=$(PROBE_SOAK) $(GO) test -tags probe_soak -count=1 -timeout 0 -v -run TestSoak ./probe/service/; \
	status=$$?; cat "$${TMPDIR:-/tmp}/probe-soak-last.txt" 2>/dev/null; exit $$status

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

# Side-by-side benchmark of etcd 3.7.3 and authorityd (issue 19): three
# server processes of each, every row of the table, the etcd server built
# from its Go module. bench/compare is its own Go module so that etcd never
# becomes a dependency of the product (internal/archtest checks that).
# Prints the table and writes bench/results/<date>.md, .json and .svg.
# BENCH_ROWS picks row families (renew,cas,lock,writes,failover,takeover,
# scale); BENCH_QUICK=true runs the small sizes; BENCH_TLS=true runs both
# with mutual TLS (default: both plaintext); BENCH_OURS_FLAGS adds flags to
# every authorityd (a before/after run of one setting). -mod=mod: the product
# module's requirements move under bench/compare's go.sum.
BENCH_ROWS  ?= all
BENCH_QUICK ?= false
BENCH_TLS   ?= false
.PHONY: bench-compare
bench-compare:
	cd bench/compare && $(GO) test -mod=mod -count=1 -timeout 20m -v -run '^TestCompare$$' . \
	  -args -rows=$(BENCH_ROWS) -quick=$(BENCH_QUICK) -tls=$(BENCH_TLS) -out=$(CURDIR)/bench/results

# Regenerate the committed protobuf code (needs protoc: Debian's
# protobuf-compiler).
proto:
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	# Output goes by go_package (module=), so the services of
	# authority/v1/service.proto land in api/authority/v1/authorityv1grpc.
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I $(PROTO_DIR) \
	  --go_out=. --go_opt=module=$(MODULE) \
	  --go-grpc_out=. --go-grpc_opt=module=$(MODULE) $(PROTOS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags "invariants failpoints" $(PKGS)

# Validate the Prometheus alerting rules with promtool (Debian: the
# `prometheus` package) when it is installed; skip with a notice otherwise.
check-rules:
	@command -v promtool >/dev/null 2>&1 || { echo "promtool not installed (Debian: apt-get install prometheus; .ci/run does)"; exit 1; }
	promtool check rules deploy/observability/prometheus-rules.yml
	promtool check rules deploy/observability/deploy-rules.yml
	promtool test rules deploy/observability/deploy-rules.test.yml
	promtool check rules deploy/observability/release-rules.yml
	promtool test rules deploy/observability/release-rules.test.yml

# A local 3-node cluster (three authorityd processes on 127.0.0.1, data
# under ./.data) with a seeded demo domain; Ctrl-C stops it cleanly.
run: build
	$(BIN)/authority-local -bin $(BIN) -data .data

# The AeroDB reference-node demo (docs/DEMO.md): three authorityd processes
# (same ports as `make run`), three refnodes on 127.0.0.1:6001-6003 and a
# writer printing every acknowledged write; state under ./.demo (wiped at
# start). Ctrl-C stops it.
demo: build
	$(BIN)/refnode demo --bin $(BIN) --data .demo $(DEMO_ARGS)

# Render the status page of the demo cluster to docs/status-page.png with
# headless Chromium (Debian: chromium). Not part of CI.
screenshot: build
	scripts/screenshot.sh

clean:
	rm -rf $(BIN) .data
