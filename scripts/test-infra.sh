#!/usr/bin/env bash
# The CDK app is its own Go module, so that `go test ./...` at the root never
# compiles the CDK bindings; this runs its vet and tests. jsii needs Node.
# The app is one package: `.` rather than `./...`, which would walk into
# infra/node_modules (the pinned CDK CLI ships Go templates that don't parse).
# The tests synthesise the stack in-process and need no AWS credentials.
set -euo pipefail
cd "$(dirname "$0")/../infra"
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
unformatted=$(gofmt -l ./*.go)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet .
go test -count=1 .
