# esd — run `make` for the list of targets.
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/bin/tools
export PATH := $(TOOLS):$(PATH)
export GOFLAGS ?= -buildvcs=false

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Pinned tool versions: the generated code is checked against them.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GOLANGCI_LINT_VERSION := v2.15.0

FUZZTIME ?= 30s
BENCHTIME ?= 1s
DURATION ?= 10s
REPEAT ?= 2
DATA_DIR ?= ./data
# The container engine of `make docker`: docker, or podman without it.
CONTAINER ?= $(shell command -v docker || command -v podman)

.DEFAULT_GOAL := help
.PHONY: help build run example test check unit e2e test-integration test-e2e test-load bench bench-compare fuzz lint fmt fmt-check vet \
	golangci-lint buf-lint proto proto-check proto-breaking docker clean tools

help: ## print this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/esd and bin/esctl
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/esd ./cmd/esd
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/esctl ./cmd/esctl

run: build ## build and start esd on $(DATA_DIR) (gRPC 127.0.0.1:7400, HTTP 127.0.0.1:7401)
	./bin/esd --data-dir $(DATA_DIR)

example: build ## run examples/inventory (the Go client's Aggregate in a shop) against a fresh esd on a temporary directory; ADDR=host:port to use a running one
	$(GO) run ./examples/inventory --esd bin/esd $(if $(ADDR),--addr $(ADDR))

test: check unit e2e ## everything CI proves: lint, generated code, unit + integration + crash tests (-race), end-to-end tests

check: fmt-check vet buf-lint proto-check golangci-lint ## static checks

unit: ## unit, in-process gRPC, fuzz-seed and crash-recovery tests, with -race
	$(GO) test -race -count=1 ./...

e2e: ## end-to-end tests: build esd and esctl, run them, kill -9 them (-race)
	$(GO) test -tags e2e -race -count=1 -timeout 10m ./test/...

test-e2e: e2e

test-integration: unit ## the in-process gRPC tests run with the unit tests

test-load: build ## a short load run against a fresh esd (see esctl bench for more)
	./test/load.sh

bench: ## Go benchmarks of the log and the writer
	$(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) -benchmem ./internal/...

bench-compare: ## esd vs PostgreSQL on the same write workloads, ratios (DURATION, REPEAT; esd alone without PostgreSQL)
	DURATION=$(DURATION) REPEAT=$(REPEAT) ./test/bench-compare.sh

fuzz: ## run every fuzz target for FUZZTIME each
	@set -e; for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; done

lint: vet golangci-lint buf-lint ## go vet, golangci-lint, buf lint

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

golangci-lint: tools
	golangci-lint run ./...

buf-lint: tools
	buf lint

# The Go code is generated from the edition-2023 rendition of the published
# proto3 files (internal/tools/protoedition), written with buf.yaml into a
# temporary directory mirroring proto/ and third_party/proto: the rendition
# has the decoder leave the UTF-8 check of strings to esd (INVALID_ARGUMENT
# naming the field, not INTERNAL). buf.gen.yaml's paths are relative to it.
PROTO_RENDITION = $(GO) run ./internal/tools/protoedition -out $$tmp -verbatim third_party/proto proto && cp buf.yaml $$tmp/

proto: tools ## regenerate the Go code in proto/ from the .proto files (via their edition-2023 rendition)
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PROTO_RENDITION) && \
	(cd $$tmp && buf generate --template $(CURDIR)/buf.gen.yaml -o $(CURDIR))

proto-check: tools ## fail if the committed generated code is not what `make proto` makes
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(PROTO_RENDITION) && \
	(cd $$tmp && buf generate --template $(CURDIR)/buf.gen.yaml -o $$tmp/out) && \
	diff -r --exclude='*.proto' proto $$tmp/out/proto && echo "generated code is current"

# The published proto3 files are compared: the rendition is a function of
# them, so a breaking change shows in them.
BREAKING_AGAINST ?= main
proto-breaking: tools ## fail on breaking changes against the git branch BREAKING_AGAINST (default main)
	buf breaking --against '.git#branch=$(BREAKING_AGAINST)'

docker: ## build the container image esd:$(VERSION) (docker, or podman without it; CONTAINER=... to choose)
	@if [ -z "$(CONTAINER)" ]; then echo "make docker: neither docker nor podman is installed (or set CONTAINER=/path/to/engine)" >&2; exit 1; fi
	$(CONTAINER) build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t esd:$(VERSION) .

clean: ## remove binaries and tools
	rm -rf bin

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/golangci-lint ## install the pinned tools into bin/tools

$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/golangci-lint:
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
