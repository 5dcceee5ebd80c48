#!/usr/bin/env bash
# The CDK app is its own Go module, so that `go test ./...` at the root never
# compiles the CDK bindings; this runs its vet and tests. jsii needs Node.
set -euo pipefail
cd "$(dirname "$0")/../infra"
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
go vet ./...
go test -count=1 ./...
