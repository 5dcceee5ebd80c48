#!/usr/bin/env bash
# Every test of the project. The tests start what they need themselves: the
# embedded DynamoDB API server, the SQS and SES stand-ins (installed from
# scripts/standins/package-lock.json on first use), the Lambda runtime
# interface emulator; and stop it when they end.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== go $(go env GOVERSION), node $(node --version 2>/dev/null || echo missing), npm $(npm --version 2>/dev/null || echo missing)"

echo "== gofmt"
unformatted=$(git ls-files --cached --others --exclude-standard '*.go' | xargs gofmt -l)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

# goolm: mautrix-go's end-to-end encryption on its pure-Go Olm rather than
# libolm through cgo (maunium.net/go/mautrix/crypto/registergoolm.go). The
# tests that drive its OlmMachine carry the tag; without it they are left
# out, so the tagless vet checks that the rest still builds on its own.
GOTAGS=goolm

echo "== go vet"
go vet ./...
go vet -tags "$GOTAGS" ./...
go vet -tags lambda.norpc ./functions/...

echo "== go test"
go test -tags "$GOTAGS" -count=1 -timeout 20m ./...

echo "== infra"
bash scripts/test-infra.sh
