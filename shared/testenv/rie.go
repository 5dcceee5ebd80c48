package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// riePackage is the Lambda runtime interface emulator, pinned by the tool
// line in go.mod.
const riePackage = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"

var rie struct {
	once sync.Once
	path string
	err  error
}

// BuildBootstrap builds the Lambda function in pkg (such as
// "./functions/client", relative to the repository root) for this machine,
// the way `make build` does for Lambda: cgo off, -tags lambda.norpc.
func BuildBootstrap(t testing.TB, pkg string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// BuildRIE builds the emulator once per test binary.
func BuildRIE(t testing.TB) string {
	t.Helper()
	rie.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			rie.err = err
			return
		}
		dir, err := os.MkdirTemp("", "cirrus-rie-")
		if err != nil {
			rie.err = err
			return
		}
		rie.path = filepath.Join(dir, "aws-lambda-rie")
		cmd := exec.Command("go", "build", "-o", rie.path, riePackage)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			rie.err = fmt.Errorf("build %s: %v\n%s", riePackage, err, b)
		}
	})
	if rie.err != nil {
		t.Fatal(rie.err)
	}
	return rie.path
}

// StartRIE runs bootstrap under the emulator on loopback ports with env added
// to the environment, and returns the invoke URL. The emulator and the
// function stop when the test ends.
func StartRIE(t testing.TB, bootstrap string, env []string) string {
	t.Helper()
	emulator := BuildRIE(t)
	invokeAddr, apiAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(emulator,
		"--runtime-interface-emulator-address", invokeAddr,
		"--runtime-api-address", apiAddr,
		"--log-level", "error",
		bootstrap)
	cmd.Dir = filepath.Dir(bootstrap)
	cmd.Env = append(os.Environ(), env...)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	// Its own process group, so that stopping it also stops the function.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("emulator and function output:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", invokeAddr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("emulator exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("emulator not listening on %s after 20s:\n%s", invokeAddr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + invokeAddr + "/2015-03-31/functions/function/invocations"
}

// Invoke sends one payload to the function and returns its response payload.
func Invoke(t testing.TB, url string, payload []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("invoke: status %d, %v: %s", res.StatusCode, err, body)
	}
	return body
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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
