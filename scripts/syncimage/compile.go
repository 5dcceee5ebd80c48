package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// cirrusPackage is the binary the image runs; an import path, so the build
// works from any folder of the module (go run at the root, go test here).
const cirrusPackage = "github.com/cirrus-matrix/cirrus/cmd/cirrus"

// compile builds cirrusPackage for linux/arch into out as the Makefile
// builds the Lambda functions: static (no cgo, the image has no libc),
// -trimpath so the same source gives the same bytes wherever it is checked
// out, and the version stamp.
func compile(ctx context.Context, arch, version, out string) error {
	ldflags := "-s -w -X github.com/cirrus-matrix/cirrus/shared/discovery.Version=" + version
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags", ldflags, "-o", out, cirrusPackage)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %w\n%s", cirrusPackage, arch, err, stderr.Bytes())
	}
	return nil
}

// goTool is the go command: $GO as the Makefile's, else go on the PATH.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// defaultVersion is the Makefile's VERSION: git describe, or "dev" outside
// a git checkout.
func defaultVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}
