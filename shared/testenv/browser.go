package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BrowserDir is where the browser scenarios live, with the package.json and
// package-lock.json that pin hydrogen-view-sdk (the Hydrogen web client) and
// playwright-core, which drives Debian's Chromium.
const BrowserDir = "scripts/browser"

// Chromium is the browser the scenarios drive: Debian's chromium package.
// playwright-core cannot download its own browsers here, and Debian's
// follows the distribution's security updates.
const Chromium = "/usr/bin/chromium"

var (
	browserOnce sync.Once
	browserDir  string
	browserErr  error
)

// Browser returns the directory of the installed scripts/browser, the node
// binary its scenarios run on and the Chromium they drive. On first use in
// a test binary it runs npm ci there when node_modules is missing or stale,
// and installs Debian's chromium with apt-get when it is missing. The test
// fails, never skips, when either cannot be installed: the browser tests are
// part of the suite.
func Browser(t testing.TB) (dir, node, chromium string) {
	t.Helper()
	browserOnce.Do(func() {
		browserDir, browserErr = npmCI(t, BrowserDir, []string{"hydrogen-view-sdk", "playwright-core"})
		if browserErr == nil {
			browserErr = ensureChromium(t)
		}
	})
	if browserErr != nil {
		t.Fatalf("testenv: %v", browserErr)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("testenv: %v", errNoNode(err))
	}
	return browserDir, node, Chromium
}

// RunBrowserContext runs `node script` in scripts/browser as
// RunJSContext does in scripts/jsclient, with CHROMIUM set to the browser's
// path.
func RunBrowserContext(ctx context.Context, t testing.TB, timeout time.Duration, script string, env ...string) (output string, err error) {
	t.Helper()
	dir, node, chromium := Browser(t)
	env = append([]string{"CHROMIUM=" + chromium}, env...)
	return runNode(ctx, dir, node, timeout, script, env)
}

// ensureChromium installs Debian's chromium package when Chromium is
// missing. It needs root and apt-get; without them it says what to run.
func ensureChromium(t testing.TB) error {
	if _, err := os.Stat(Chromium); err == nil {
		return nil
	}
	const hint = "install it (Debian: apt-get install chromium)"
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return fmt.Errorf("%s is missing and apt-get is not on PATH: %s", Chromium, hint)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s is missing and the tests do not run as root, so they cannot install it: %s", Chromium, hint)
	}
	unlock, err := lockFile(filepath.Join(os.TempDir(), "cirrus-chromium-install.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(Chromium); err == nil {
		return nil // another test binary installed it while this one waited
	}
	t.Logf("testenv: %s is missing, installing Debian's chromium with apt-get", Chromium)
	began := time.Now()
	install := []string{"install", "-y", "--no-install-recommends", "chromium"}
	if out, err := runApt(apt, install...); err != nil {
		// The package lists may be stale or absent (as in a fresh container).
		t.Logf("testenv: apt-get install failed, running apt-get update first: %s", lastLines(out, 5))
		if out, err := runApt(apt, "update"); err != nil {
			return fmt.Errorf("apt-get update: %w\n%s", err, lastLines(out, 20))
		}
		if out, err := runApt(apt, install...); err != nil {
			return fmt.Errorf("apt-get install chromium: %w\n%s", err, lastLines(out, 20))
		}
	}
	if _, err := os.Stat(Chromium); err != nil {
		return fmt.Errorf("apt-get installed chromium but %s is still missing: %w", Chromium, err)
	}
	t.Logf("testenv: apt-get install chromium took %v", time.Since(began).Round(time.Millisecond))
	return nil
}

func runApt(apt string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, apt, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	return cmd.CombinedOutput()
}
