# tdforge — see README.md. All targets run as root on Debian 12.
SHELL       := /bin/bash
GO          ?= go
export GOFLAGS := -buildvcs=false
export GOTOOLCHAIN := local
BIN         := bin
DEV_IMAGE   := images/dev
# The fixed, public DEV key of the dev image's encrypted model (manifests/dev-secrets/README.md).
DEV_SECRETS ?= manifests/dev-secrets
PROGRAMS    := builder initd agent verifier
FUZZTIME    ?= 10s
# goimports at a pinned version (fetched through the Go module proxy once).
GOIMPORTS   ?= $(GO) run golang.org/x/tools/cmd/goimports@v0.52.0
# The pinned Debian packages `make deps` caches; tests find them here.
CACHE_DIR   := $(or $(TDFORGE_CACHE),$(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME)/tdforge,$(HOME)/.cache/tdforge))
export TDFORGE_KERNEL_DEB ?= $(CACHE_DIR)/deb/linux-image-6.12.117+deb12-cloud-amd64-unsigned_6.12.117-1~deb12u1_amd64.deb
export TDFORGE_KERNEL61_DEB ?= $(CACHE_DIR)/deb/linux-image-6.1.0-56-cloud-amd64-unsigned_6.1.192-2_amd64.deb
export TDFORGE_OVMF_DEB   ?= $(CACHE_DIR)/deb/ovmf_2022.11-6+deb12u2_all.deb

.PHONY: all deps build test unit fuzz demo bench reference-values check-reference-values lint image clean

all: build

## deps: install Debian packages, pinned kernel/OVMF packages and Go modules (idempotent)
deps:
	@bash scripts/deps.sh

## build: all binaries into bin/
build:
	@mkdir -p $(BIN)
	@for p in $(PROGRAMS); do echo "build: $(BIN)/$$p"; CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/$$p ./$$p || exit 1; done

## image: build the dev image (manifests/dev.hcl) into images/dev
image: build
	$(BIN)/builder build --secrets $(DEV_SECRETS) -o $(DEV_IMAGE) manifests/dev.hcl

## test: deps, then every Go test (unit, cross-checks, QEMU integration), fuzz smoke and the reference-values gate
test: deps build
	$(GO) vet ./...
	$(GO) test -timeout 80m ./...
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory check-reference-values

## fuzz: run every fuzz target for a short bounded time
fuzz:
	@bash scripts/fuzz.sh $(FUZZTIME)

## demo: build, boot, verify and chat with the dev image
demo: deps build
	@bash scripts/demo.sh

## bench: every benchmark; report in images/bench.json and a table on stdout
bench: deps build
	@bash scripts/bench.sh

## reference-values: regenerate the committed reference values (and their exports) from manifests/
reference-values: build
	$(BIN)/builder build --secrets $(DEV_SECRETS) -o $(DEV_IMAGE) manifests/dev.hcl
	@bash scripts/refvalues.sh $(DEV_IMAGE) reference-values

## check-reference-values: rebuild manifests/dev.hcl and fail if the committed values differ
check-reference-values: build
	$(BIN)/builder build --secrets $(DEV_SECRETS) -o $(DEV_IMAGE) manifests/dev.hcl
	@rm -rf images/refcheck && mkdir -p images/refcheck
	@bash scripts/refvalues.sh $(DEV_IMAGE) images/refcheck
	@if ! diff -ru reference-values images/refcheck; then \
	  echo "reference-values/ differs from a fresh build: run 'make reference-values' if the change is intended" >&2; exit 1; fi
	@echo "reference values: a fresh build reproduced every file in reference-values/"

## lint: gofmt, goimports -local github.com/tdforge/tdforge, and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@out=$$($(GOIMPORTS) -local github.com/tdforge/tdforge -l $$(git ls-files '*.go')) || exit 1; \
	  if [ -n "$$out" ]; then echo "goimports -local github.com/tdforge/tdforge -w needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN) images/dev images/*.tmp* images/*.build.log
