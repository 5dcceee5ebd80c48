package testenv

// The Lambda runtime interface emulator (aws-lambda-rie, pinned by the tool
// line in go.mod) runs a function's bootstrap as Lambda does: the function
// long-polls the Runtime API for events, and the emulator takes invocations
// on one HTTP endpoint. What the emulator's source (internal/lambda/rie)
// says, and this file relies on:
//
//   - `aws-lambda-rie <bootstrap>` runs that program; with more arguments the
//     last one is taken as the handler name (_HANDLER), which a Go bootstrap
//     ignores. The working directory of the emulator is the function's.
//   - --runtime-interface-emulator-address (default 0.0.0.0:8080) is where
//     invocations are taken; --runtime-api-address (default 127.0.0.1:9001)
//     is the Runtime API given to the function as AWS_LAMBDA_RUNTIME_API.
//     Both are set here to free loopback ports, so that emulators of
//     parallel tests never collide.
//   - The function is started on the first invocation, not at start-up, and
//     stays up for the next ones; its whole environment is the emulator's.
//   - AWS_LAMBDA_FUNCTION_TIMEOUT (seconds, default 300), _NAME, _VERSION and
//     _MEMORY_SIZE configure the emulated function; AWS_LAMBDA_MAX_CONCURRENCY
//     in the environment switches to a different emulator (Lambda Managed
//     Instances), so it is never inherited.
//   - One invocation runs at a time: a concurrent one is refused with 400.
//   - A function error comes back as an {"errorMessage","errorType"} payload,
//     with 200, or with 502 when the function exited (aws-lambda-go exits
//     after a panic; the next invocation starts it again); a timeout comes
//     back as 200 with the text "Task timed out after N.00 seconds". Invoke
//     turns all of these into test failures.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// riePackage is the emulator's main package.
const riePackage = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"

// rieInvokePath is the emulator's invoke endpoint, Lambda's Invoke API path
// for a function named "function".
const rieInvokePath = "/2015-03-31/functions/function/invocations"

const (
	// rieStartAttempts is how many times StartRIE tries new ports.
	rieStartAttempts = 5
	// rieStartTimeout bounds the wait for the emulator to listen.
	rieStartTimeout = 20 * time.Second
	// rieStopTimeout is how long the emulator and function get to exit after
	// SIGTERM before SIGKILL.
	rieStopTimeout = 5 * time.Second
	// functionTimeout is the function's timeout unless env sets
	// AWS_LAMBDA_FUNCTION_TIMEOUT: shorter than the emulator's 300 seconds,
	// so that a stuck function fails its test well before go test's timeout.
	functionTimeout = 30
	// invokeTimeout bounds one Invoke, function start included.
	invokeTimeout = 2*functionTimeout*time.Second + 10*time.Second
)

var rie struct {
	once sync.Once
	path string
	err  error
}

// invokeLocks serializes the invocations of each emulator (by invoke URL),
// since the emulator refuses a second concurrent one.
var invokeLocks sync.Map

// BuildBootstrap builds the Lambda function in pkg (such as
// "./functions/client", relative to the module root, found by walking up
// from the working directory to go.mod) as `make build` does for Lambda,
// cgo off and -tags lambda.norpc, but for this machine's GOOS and GOARCH so
// that it runs here. It returns the path of the binary, named bootstrap in a
// directory of t.TempDir().
func BuildBootstrap(t testing.TB, pkg string) (path string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", path, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+runtime.GOOS, "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return path
}

// BuildRIE builds the emulator at the version go.mod pins, once per test
// binary, and returns its path. The binary is kept in the user's cache
// directory (replaced atomically, so that test binaries building it at once
// do not clash) rather than in a temporary directory that nothing would
// remove.
func BuildRIE(t testing.TB) string {
	t.Helper()
	rie.once.Do(func() { rie.path, rie.err = buildRIE() })
	if rie.err != nil {
		t.Fatal(rie.err)
	}
	return rie.path
}

func buildRIE() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.UserCacheDir()
	if err == nil {
		dir = filepath.Join(dir, "cirrus")
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		// No usable cache directory (no HOME): a temporary one will do.
		if dir, err = os.MkdirTemp("", "cirrus-rie-"); err != nil {
			return "", fmt.Errorf("build %s: %w", riePackage, err)
		}
	}
	path := filepath.Join(dir, "aws-lambda-rie")
	tmp := path + "." + strconv.Itoa(os.Getpid()) + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, riePackage)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build %s: %v\n%s", riePackage, err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build %s: %w", riePackage, err)
	}
	return path, nil
}

// StartRIE runs bootstrap under the emulator (built by BuildRIE), listening
// on a free loopback port, and returns the URL to Invoke. It returns once the
// emulator listens; the function itself starts on the first invocation.
//
// The function's environment is this process's without its AWS_, CIRRUS_
// and DYNAMODB_ENDPOINT variables, so that nothing of a developer's shell
// (real credentials, a profile, a table) reaches it; then Lambda-like
// defaults (region us-east-1, dummy credentials, no EC2 metadata, a 30 s
// function timeout); then env, which wins.
//
// The emulator runs in a process group of its own, and runs the function in
// another. When the test ends, the function's group gets SIGKILL, then the
// emulator's SIGTERM, and SIGKILL after 5 s. If the test binary dies first,
// Linux kills the emulator (parent-death signal) and the function exits as
// its Runtime API goes away. The emulator's and function's output is logged
// when the test has failed.
func StartRIE(t testing.TB, bootstrap string, env []string) (invokeURL string) {
	t.Helper()
	emulator := BuildRIE(t)
	// A port free a moment ago may be bound by another process (another
	// test binary's emulator) before this one binds it: the emulator then
	// exits, or a dial would reach the other process. A start counts only
	// once the emulator itself holds the listening socket; else new ports.
	var lastOut string
	for range rieStartAttempts {
		url, out, ok := startRIE(t, emulator, bootstrap, env)
		if ok {
			return url
		}
		lastOut = out
	}
	t.Fatalf("emulator did not start in %d attempts; the last one's output:\n%s", rieStartAttempts, lastOut)
	return ""
}

// startRIE makes one attempt of StartRIE. ok is false when the emulator
// exited at start or did not come to hold its invoke address, with its
// output; other failures end the test.
func startRIE(t testing.TB, emulator, bootstrap string, env []string) (invokeURL, output string, ok bool) {
	t.Helper()
	addrs, err := freeLoopbackAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	invokeAddr, runtimeAPIAddr := addrs[0], addrs[1]
	cmd := exec.Command(emulator,
		"--runtime-interface-emulator-address", invokeAddr,
		"--runtime-api-address", runtimeAPIAddr,
		"--log-level", "warn",
		bootstrap)
	cmd.Dir = filepath.Dir(bootstrap)
	cmd.Env = functionEnv(os.Environ(), env)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		// The emulator runs the function in a process group of its own and
		// exits on SIGTERM without stopping it: stop the function first,
		// while the emulator, its parent, still holds its PID.
		for _, pid := range childPIDs(pgid) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(rieStopTimeout):
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}

	deadline := time.Now().Add(rieStartTimeout)
	for !listensOn(pgid, invokeAddr) {
		select {
		case <-exited:
			stop()
			return "", out.String(), false
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("emulator not listening on %s after %s:\n%s", invokeAddr, rieStartTimeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("emulator and function output (%s):\n%s", bootstrap, out)
		}
	})
	return "http://" + invokeAddr + rieInvokePath, "", true
}

// listensOn reports whether process pid holds a listening TCP socket on
// addr (127.0.0.1:<port>), from /proc: the socket's inode in
// /proc/net/tcp, among the process's open files.
func listensOn(pid int, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	local := fmt.Sprintf("0100007F:%04X", n)
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st ... inode (field 9); 0A is LISTEN.
		if len(f) > 9 && f[1] == local && f[3] == "0A" {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && inodes[link] {
			return true
		}
	}
	return false
}

// Invoke sends one event payload to the function behind invokeURL and
// returns the function's response payload. It fails the test when the
// emulator answers other than 200 or when the function failed: an error or
// panic (an {"errorMessage","errorType"} payload) or a timeout. Invocations
// of one emulator are serialized, so parallel subtests may share it.
func Invoke(t testing.TB, invokeURL string, payload []byte) []byte {
	t.Helper()
	mu, _ := invokeLocks.LoadOrStore(invokeURL, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), invokeTimeout)
	defer cancel()
	res, err := invoke(ctx, invokeURL, payload)
	if err != nil {
		t.Fatalf("invoke %s: %v", invokeURL, err)
	}
	return res
}

func invoke(ctx context.Context, invokeURL string, payload []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, invokeURL, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	// A function error comes with 200, or 502 when the function exited
	// (as it does after a panic).
	if fe, ok := functionError(body); ok {
		return nil, fmt.Errorf("function failed (emulator status %d): %s: %s", res.StatusCode, fe.ErrorType, fe.ErrorMessage)
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("emulator answered %s: %s", res.Status, body)
	}
	if bytes.HasPrefix(body, []byte("Task timed out after")) {
		return nil, errors.New(string(body))
	}
	return body, nil
}

type lambdaError struct {
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}

// functionError reports whether payload is Lambda's report of a function
// error: an object of errorMessage and errorType, maybe with stackTrace.
func functionError(payload []byte) (lambdaError, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(payload, &fields) != nil {
		return lambdaError{}, false
	}
	if _, ok := fields["errorType"]; !ok {
		return lambdaError{}, false
	}
	for k := range fields {
		if k != "errorMessage" && k != "errorType" && k != "stackTrace" {
			return lambdaError{}, false
		}
	}
	var e lambdaError
	json.Unmarshal(payload, &e)
	return e, true
}

// functionEnv is the emulator's (so the function's) environment: base without
// the variables a developer's shell may hold for AWS or Cirrus, Lambda-like
// defaults, then env.
func functionEnv(base, env []string) []string {
	var out []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "CIRRUS_") ||
			k == "DYNAMODB_ENDPOINT" || k == "_HANDLER" || k == "LOG_LEVEL" {
			continue
		}
		out = append(out, kv)
	}
	out = append(out,
		"AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=testenv",
		"AWS_SECRET_ACCESS_KEY=testenv",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_LAMBDA_FUNCTION_TIMEOUT="+strconv.Itoa(functionTimeout),
	)
	// exec uses the last value of a repeated key: env wins.
	return append(out, env...)
}

// childPIDs lists the children of process pid, from /proc (Linux); elsewhere
// it finds none.
func childPIDs(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var pids []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if child, err := strconv.Atoi(field); err == nil && child > 1 {
				pids = append(pids, child)
			}
		}
	}
	return pids
}

// setParentDeathSignal asks Linux to SIGKILL the child when the test binary
// dies (a go test timeout, a crash), where no Cleanup runs. The field exists
// only on Linux, hence reflection; elsewhere this does nothing.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
}

// freeLoopbackAddrs returns n distinct loopback addresses with ports free
// now. All listeners are held until all are chosen, so that the kernel
// cannot hand out the same port twice.
func freeLoopbackAddrs(n int) ([]string, error) {
	// Below the kernel's ephemeral range: a port taken from it could be
	// given to another test's listener on :0, or to an outgoing
	// connection, between this check and the emulator's bind, and a dial
	// would then reach that instead.
	low, high := 20000, ephemeralStart()-1
	var addrs []string
	for tries := 0; len(addrs) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("free port: none free in %d-%d", low, high)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(low+rand.IntN(high-low+1)))
		if slices.Contains(addrs, addr) {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	doc, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if f := strings.Fields(string(doc)); err == nil && len(f) == 2 {
		if n, err := strconv.Atoi(f[0]); err == nil && n > 21000 {
			return n
		}
	}
	return 32768
}

// moduleRoot is the nearest directory at or above the working directory that
// holds a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// lockedBuffer collects a process's output, written and read concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
