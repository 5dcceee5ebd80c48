package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// testVersion is the version the tests stamp and expect as the tag.
const testVersion = "test-1.0"

// The cirrus binary for the host, compiled once per test binary: a
// compile takes minutes on a loaded 2-core machine.
var (
	hostBinaryOnce sync.Once
	hostBinaryPath string
	hostBinaryErr  error
	hostBinaryDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if hostBinaryDir != "" {
		os.RemoveAll(hostBinaryDir)
	}
	os.Exit(code)
}

// hostBinary returns the path of ./cmd/cirrus compiled for linux/<host
// arch>, skipping where the image's binary could not run (not Linux, an
// arch the image does not support).
func hostBinary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("the image's linux/%s binary cannot run on %s/%s", runtime.GOARCH, runtime.GOOS, runtime.GOARCH)
	}
	hostBinaryOnce.Do(func() {
		hostBinaryDir, hostBinaryErr = os.MkdirTemp("", "syncimage-test-")
		if hostBinaryErr != nil {
			return
		}
		// Only bounds a hang; a cold compile on a busy machine is slow.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		hostBinaryPath = filepath.Join(hostBinaryDir, "cirrus")
		hostBinaryErr = compile(ctx, runtime.GOARCH, testVersion, hostBinaryPath)
	})
	if hostBinaryErr != nil {
		t.Fatal(hostBinaryErr)
	}
	return hostBinaryPath
}

// buildLayout packages the host binary into a layout in a temp folder and
// returns the folder and the image digest.
func buildLayout(t *testing.T) (string, v1.Hash) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sync-image")
	digest, err := build(context.Background(), buildOptions{
		Arch: runtime.GOARCH, Out: dir, Version: testVersion, Binary: hostBinary(t),
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	return dir, digest
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestRun_Usage(t *testing.T) {
	var stdout, stderr strings.Builder
	if err := run(context.Background(), []string{"help"}, &stdout, &stderr); err != nil {
		t.Fatalf("help: %v", err)
	}
	for _, want := range []string{"syncimage build", "syncimage push", "Examples:", "AWS_REGION"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help text lacks %q:\n%s", want, stdout.String())
		}
	}
	if err := run(context.Background(), []string{"bake"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), `unknown command "bake"`) {
		t.Errorf("unknown command: err = %v", err)
	}
}

func TestRun_BadInput(t *testing.T) {
	tmp := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build", "-arch", "mips"}, `-arch "mips": want arm64 or amd64`},
		{[]string{"build", "-version", "v", "extra"}, `unexpected argument "extra"`},
		{[]string{"push", "-o", tmp, "-registry", "127.0.0.1:1"}, "run `make image`"},
		{[]string{"push", "-o", tmp, "-repository", ""}, "a repository name is needed"},
	} {
		var stdout, stderr strings.Builder
		err := run(context.Background(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to say %q", tc.args, err, tc.want)
		}
	}
}

func TestTagName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.0", "v1.2.0"},
		{"0dbe4ad-dirty", "0dbe4ad-dirty"},
		{"feature/x+meta", "feature-x-meta"},
		{"-x", "v-x"},
		{strings.Repeat("a", 200), strings.Repeat("a", 128)},
	} {
		if got := tagName(tc.in); got != tc.want {
			t.Errorf("tagName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
