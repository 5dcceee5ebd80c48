// Package testenv starts the local stand-ins that Cirrus's tests run the real
// AWS SDK clients against: fauxqs for SQS and aws-ses-v2-local for SES v2,
// both npm packages pinned by scripts/standins/package-lock.json. Testing the
// real *sqs.Client and *sesv2.Client over HTTP catches what an in-process fake
// cannot (serialization, signing, attribute round trips).
//
// Only _test files import this package: Lambda binaries must never link it
// (functions/deps_test.go checks).
//
// Each stand-in is a node child process in its own process group, listening
// on a kernel-chosen loopback port. It is started on first use and shared by
// the tests of the binary. It stops when the last test using it ends, or, for
// a package whose TestMain calls Main, once all tests are done. It also exits
// by itself when the test binary dies (its stdin pipe closes), so no run,
// passing, failing or killed, leaves a process behind.
//
// It also installs matrix-js-sdk and the Node.js 22 it runs on, pinned by
// scripts/jsclient/package-lock.json, and runs scenarios with them (JSClient,
// RunJS in jsclient.go), and Hydrogen, playwright-core and Debian's Chromium
// for the browser test (Browser, RunBrowserContext in browser.go).
package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// StandinsDir is where the stand-ins' package.json, lockfile and launcher
// live, relative to the repository root.
const StandinsDir = "scripts/standins"

const (
	// minNodeMajor is the oldest Node.js the pinned stand-ins run on.
	minNodeMajor = 20
	// startTimeout bounds one stand-in's start, from exec to a healthy answer.
	startTimeout = 60 * time.Second
	// installTimeout bounds npm ci.
	installTimeout = 10 * time.Minute
	// stopGrace is how long a stand-in has to exit after SIGTERM before its
	// process group is killed.
	stopGrace = 3 * time.Second
	// stampFile, inside node_modules, records what node_modules was installed
	// from, so that a changed lockfile triggers npm ci again.
	stampFile = ".cirrus-standins.sha256"
)

var (
	sqsStandin = &standin{pkg: "fauxqs", health: "/health"}
	sesStandin = &standin{pkg: "aws-ses-v2-local", health: "/health-check"}

	// managed is set by Main: stand-ins then live until Main's StopAll
	// instead of stopping when their last user ends, so that a package's
	// tests share one start.
	managed atomic.Bool

	installOnce sync.Once
	installDir  string
	installErr  error
)

// StartSQS returns the endpoint of a running fauxqs (SQS), such as
// "http://127.0.0.1:41234", starting it if needed. The test fails if it
// cannot be started, including when node or npm is missing: the stand-ins
// are part of the test suite, not optional extras.
func StartSQS(t testing.TB) (endpoint string) {
	t.Helper()
	return sqsStandin.start(t)
}

// StartSES returns the endpoint of a running aws-ses-v2-local (SES v2),
// starting it if needed. Mail sent to it is read back with GET {endpoint}/store.
// The test fails if it cannot be started.
func StartSES(t testing.TB) (endpoint string) {
	t.Helper()
	return sesStandin.start(t)
}

// Main runs a package's tests with the stand-ins kept across all of them,
// then stops every stand-in and exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Without it each stand-in stops when the last test using it ends and is
// started again by the next, which is correct but slower.
func Main(m *testing.M) {
	managed.Store(true)
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StopAll stops every running stand-in and waits for it to exit. It is safe
// to call at any time and more than once; a later Start starts a new one.
func StopAll() {
	for _, s := range []*standin{sqsStandin, sesStandin} {
		s.mu.Lock()
		if s.proc != nil {
			s.proc.stop()
			s.proc = nil
		}
		s.users = 0
		s.mu.Unlock()
	}
}

// AWSConfig is an SDK configuration for a local stand-in at endpoint: static
// dummy credentials (stand-ins need a signed request but check no
// signature), region us-east-1, and response checksums validated only when an
// operation requires them, since local endpoints send no CRC32 header. It
// reads nothing from the environment, so a developer's AWS profile can never
// point a test at a real account.
func AWSConfig(endpoint string) aws.Config {
	return aws.Config{
		Region:                     "us-east-1",
		Credentials:                credentials.NewStaticCredentialsProvider("cirrus-test", "cirrus-test", ""),
		BaseEndpoint:               aws.String(endpoint),
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
}

// standin is one stand-in server, started at most once at a time.
type standin struct {
	pkg    string // npm package, also serve.mjs's argument
	health string // path that answers 200 once the server is up

	mu    sync.Mutex
	proc  *process // running process, or nil
	users int      // tests using proc that have not ended, when not managed
	err   error    // a failed start, reported to every later caller
}

// logger is what installing needs of a test, which a program has too.
type logger interface {
	Logf(format string, args ...any)
}

// logf makes a function a logger.
type logf func(format string, args ...any)

func (f logf) Logf(format string, args ...any) { f(format, args...) }

// RunSQS starts a fauxqs of its own for a program that is not a test (the
// bench), installing the stand-ins as the tests do; progress goes to
// progress. stop ends it.
func RunSQS(progress func(format string, args ...any)) (endpoint string, stop func(), err error) {
	dir, err := install(logf(progress))
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := startProcess(ctx, dir, sqsStandin.pkg, sqsStandin.health)
	if err != nil {
		return "", nil, fmt.Errorf("start %s: %w", sqsStandin.pkg, err)
	}
	return p.endpoint, p.stop, nil
}

func (s *standin) start(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatalf("testenv: %v", s.err)
	}
	if s.proc != nil && s.proc.exited() {
		t.Logf("testenv: %s had exited, starting it again; its output:\n%s", s.pkg, s.proc.output())
		s.proc.stop()
		s.proc, s.users = nil, 0
	}
	if s.proc == nil {
		p, err := s.launch(t)
		if err != nil {
			s.err = err
			t.Fatalf("testenv: %v", err)
		}
		s.proc = p
	}
	if !managed.Load() {
		s.users++
		p := s.proc
		t.Cleanup(func() { s.release(p) })
	}
	return s.proc.endpoint
}

// release ends one test's use of p and stops p after its last user. A use
// of a process that StopAll has already stopped counts for nothing.
func (s *standin) release(p *process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != p {
		return
	}
	s.users--
	if s.users <= 0 && !managed.Load() {
		s.proc.stop()
		s.proc = nil
		s.users = 0
	}
}

func (s *standin) launch(t testing.TB) (*process, error) {
	dir, err := install(t)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	began := time.Now()
	p, err := startProcess(ctx, dir, s.pkg, s.health)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.pkg, err)
	}
	t.Logf("testenv: %s listening at %s (pid %d, ready in %v)", s.pkg, p.endpoint, p.cmd.Process.Pid, time.Since(began).Round(time.Millisecond))
	return p, nil
}

// process is a running stand-in.
type process struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser // closing it tells the launcher to exit
	endpoint string
	done     chan struct{} // closed when the process has been waited for
	out      *tail
}

// startProcess runs `node serve.mjs NAME` in dir and waits until it listens
// and answers GET health with 200.
func startProcess(ctx context.Context, dir, name, health string) (*process, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, errNoNode(err)
	}
	cmd := exec.Command(node, "serve.mjs", name, "--host", "127.0.0.1", "--port", "0")
	cmd.Dir = dir
	// Its own process group, so that stop reaches anything it spawns and a
	// Ctrl-C aimed at go test does not race with stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Output goes to pipes read here, never to the test binary's own stdout:
	// go test waits for every holder of that to close it.
	out := &tail{max: 64 << 10}
	ready := make(chan string, 1)
	cmd.Stdout = &readyWriter{out: out, ready: ready}
	cmd.Stderr = out
	cmd.WaitDelay = stopGrace
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run node: %w", err)
	}
	p := &process{cmd: cmd, stdin: stdin, done: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()

	fail := func(err error) (*process, error) {
		p.stop()
		return nil, fmt.Errorf("%w; output:\n%s", err, p.output())
	}
	select {
	case line := <-ready:
		p.endpoint = line
	case <-p.done:
		return fail(fmt.Errorf("exited before listening (%v)", cmd.ProcessState))
	case <-ctx.Done():
		return fail(fmt.Errorf("not listening after %v", startTimeout))
	}
	u, err := url.Parse(p.endpoint)
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() == "" {
		return fail(fmt.Errorf("announced %q, want http://127.0.0.1:PORT", p.endpoint))
	}
	if err := waitHealthy(ctx, p, p.endpoint+health); err != nil {
		return fail(err)
	}
	return p, nil
}

// waitHealthy polls url until it answers 200, the process exits or ctx ends.
func waitHealthy(ctx context.Context, p *process, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("health request: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering %s (%v)", url, p.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy after %v: %w", url, startTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) output() string { return p.out.String() }

// stop ends the process group: SIGTERM, then SIGKILL after stopGrace, then
// waits for the leader to be reaped. Closing stdin first makes the launcher
// exit even if signals were somehow missed.
func (p *process) stop() {
	_ = p.stdin.Close()
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything the launcher spawned that outlived it is still in the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// install makes sure scripts/standins/node_modules matches the lockfile,
// running npm ci when it is missing or stale. It runs once per test binary;
// a file lock keeps parallel test binaries (go test ./...) from installing
// over each other.
func install(t logger) (string, error) {
	installOnce.Do(func() {
		installDir, installErr = doInstall(t)
	})
	return installDir, installErr
}

func doInstall(t logger) (string, error) {
	return npmCI(t, StandinsDir, []string{sqsStandin.pkg, sesStandin.pkg})
}

// npmCI makes sure node_modules in rel, a directory of the repository
// holding a package.json and its package-lock.json, matches the lockfile and
// holds pkgs, running npm ci when it is missing or stale. It returns the
// directory's absolute path. A file lock keeps parallel test binaries
// (go test ./...) from installing over each other.
func npmCI(t logger, rel string, pkgs []string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, filepath.FromSlash(rel))
	if err := checkNode(); err != nil {
		return "", err
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm is not on PATH (%v): the packages in %s are installed with npm ci; install npm (Debian: apt-get install npm)", err, rel)
	}
	want, err := lockStamp(dir)
	if err != nil {
		return "", err
	}

	unlock, err := lockFile(filepath.Join(os.TempDir(), "cirrus-"+filepath.Base(dir)+"-"+want[:16]+"-"+shortHash(dir)+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	stamp := filepath.Join(dir, "node_modules", stampFile)
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want && installed(dir, pkgs) {
		return dir, nil
	}
	t.Logf("testenv: node_modules in %s is missing or stale, running npm ci", rel)
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", dir, err, lastLines(out, 40))
	}
	if err := os.WriteFile(stamp, []byte(want+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write install stamp: %w", err)
	}
	t.Logf("testenv: npm ci in %s took %v", rel, time.Since(began).Round(time.Millisecond))
	return dir, nil
}

// installed reports whether every package of pkgs is in dir's node_modules.
func installed(dir string, pkgs []string) bool {
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			return false
		}
	}
	return true
}

// lockStamp hashes what node_modules is installed from.
func lockStamp(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("read stand-in manifest: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

// lockFile takes an exclusive flock on path, waiting for it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open install lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("take install lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(StandinsDir), "package-lock.json")); err != nil {
				return "", fmt.Errorf("find stand-ins: %s has go.mod but no %s/package-lock.json", dir, StandinsDir)
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

func errNoNode(err error) error {
	return fmt.Errorf("node is not on PATH (%v): the SQS and SES stand-ins (%s) need Node.js %d or later and npm; install them (Debian: apt-get install nodejs npm)", err, StandinsDir, minNodeMajor)
}

// checkNode fails clearly when node is missing or too old.
func checkNode() error {
	node, err := exec.LookPath("node")
	if err != nil {
		return errNoNode(err)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		return fmt.Errorf("node --version: %w", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		return fmt.Errorf("node --version printed %q", out)
	}
	if major < minNodeMajor {
		return fmt.Errorf("node %s is too old: the stand-ins in %s need Node.js %d or later", v, StandinsDir, minNodeMajor)
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readyWriter passes a launcher's stdout to out and sends the address of its
// first "listening URL" line to ready.
type readyWriter struct {
	out   *tail
	ready chan<- string
	buf   []byte
	sent  bool
}

func (w *readyWriter) Write(b []byte) (int, error) {
	w.out.Write(b)
	if w.sent {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
		if addr, ok := strings.CutPrefix(line, "listening "); ok {
			w.ready <- addr
			w.sent, w.buf = true, nil
			break
		}
	}
	return len(b), nil
}

// tail keeps the last max bytes written to it, for failure messages.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, b...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
