# Cirrus: the two commands a newcomer needs are `make run` and `make test`.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUNCTIONS := client federation sender
LDFLAGS   := -s -w -X github.com/cirrus-matrix/cirrus/shared/discovery.Version=$(VERSION)

.PHONY: run test build bench cirrus clean

## run: the homeserver locally on the embedded defaults (ARGS="-config cirrus.yaml" to add a config)
run: cirrus
	./bin/cirrus serve $(ARGS)

cirrus:
	$(GO) build -o bin/cirrus ./cmd/cirrus

## test: every test, with the stand-ins it needs started and stopped by the tests themselves
test:
	bash scripts/test.sh

## build: one bootstrap zip per Lambda function, linux/arm64, in dist/
build:
	@mkdir -p dist
	@for fn in $(FUNCTIONS); do \
		GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath \
			-ldflags "$(LDFLAGS)" -o dist/$$fn/bootstrap ./functions/$$fn || exit 1; \
		$(GO) run ./scripts/lambdazip dist/$$fn/bootstrap dist/$$fn.zip || exit 1; \
	done
	@ls -l dist/*.zip | awk '{ printf "%-24s %6.1f MB\n", $$NF, $$5 / 1048576 }'

## bench: latency and DynamoDB cost per request of the endpoints, against cirrus serve
bench:
	$(GO) run ./scripts/bench $(ARGS)

clean:
	rm -rf bin dist
