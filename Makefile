# Cirrus: the two commands a newcomer needs are `make run` and `make test`.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUNCTIONS := client federation sender tier
LDFLAGS   := -s -w -X github.com/cirrus-matrix/cirrus/shared/discovery.Version=$(VERSION)

.PHONY: run test build bench cirrus clean synth deploy fuzz image

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

## image: the sync tier's container image (linux/arm64, built without Docker: scripts/syncimage)
##        as an OCI layout in dist/sync-image, its digest in dist/sync-image/digest for the stack
image:
	$(GO) run ./scripts/syncimage build -arch arm64 -version $(VERSION) -o dist/sync-image

# The sync tier is on when CONTEXT holds -c syncTier=fargate (context set in
# cdk.json instead is not seen here: run `make image` first, and push with
# `go run ./scripts/syncimage push`). Its image goes to the ECR repository
# the stack imports: syncImageRepository, by default cirrus-sync.
SYNC_TIER       := $(filter syncTier=fargate,$(CONTEXT))
SYNC_REPOSITORY := $(or $(patsubst syncImageRepository=%,%,$(filter syncImageRepository=%,$(CONTEXT))),cirrus-sync)

## synth: the CloudFormation template in cdk.out/, offline and without AWS credentials
##        (CONTEXT="-c domainName=matrix.example.org -c serverName=example.org ..."; an example by default)
CDK       := infra/node_modules/.bin/cdk
CDK_ENV   := AWS_EC2_METADATA_DISABLED=true CDK_DISABLE_CLI_TELEMETRY=true JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
synth: build $(if $(SYNC_TIER),image) $(CDK)
	$(CDK_ENV) $(CDK) synth --no-notices -q $(or $(CONTEXT),-c domainName=matrix.example.org -c serverName=example.org)
	@echo "cdk.out/Cirrus.template.json"

## deploy: build the functions and deploy the stack (CONTEXT="-c domainName=... ...").
##         Needs AWS credentials and a region (AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
##         AWS_REGION; not --profile in ARGS, which the image push would not see) with the rights
##         of a CDK deployment. With -c syncTier=fargate it first builds the sync tier's image and
##         pushes it to ECR (the repository created if missing): that needs ecr:DescribeRepositories,
##         ecr:CreateRepository, ecr:GetAuthorizationToken and the repository's push actions
##         (ecr:BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
##         CompleteLayerUpload, PutImage, BatchGetImage)
deploy: build $(if $(SYNC_TIER),image) $(CDK)
	$(if $(SYNC_TIER),$(GO) run ./scripts/syncimage push -o dist/sync-image -repository $(SYNC_REPOSITORY))
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(CDK) deploy $(CONTEXT) $(ARGS)

# The CDK CLI, pinned in infra/package-lock.json.
$(CDK): infra/package.json infra/package-lock.json
	npm ci --prefix infra --no-audit --no-fund
	@touch $@

## fuzz: every fuzz target (func FuzzXxx) of the packages in FUZZPKGS, one after another, each for
##       FUZZTIME; a failing input is written to the package's testdata/fuzz/: fix the code and
##       commit the input, which `make test` then runs as a seed, as it runs every seed corpus
FUZZTIME ?= 60s
FUZZPKGS ?= ./...
# Minimizing a new input may otherwise take up to 60 s of a bounded run.
FUZZMINIMIZETIME ?= 5s
fuzz:
	@list=$$($(GO) test -tags goolm -list '^Fuzz' $(FUZZPKGS)) || { echo "$$list"; exit 1; }; \
	echo "$$list" | \
		awk '/^Fuzz/ { names[n++] = $$1 } /^ok/ { for (i = 0; i < n; i++) print $$2, names[i]; n = 0 }' | \
		while read -r pkg name; do \
			echo "== $$name ($$pkg, $(FUZZTIME))"; \
			$(GO) test -tags goolm -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) \
				-fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
		done

## bench: latency and DynamoDB cost per request of the endpoints, against cirrus serve
bench:
	$(GO) run ./scripts/bench $(ARGS)

clean:
	rm -rf bin dist
