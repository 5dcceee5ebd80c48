package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a server started by the bench, stopped by its PID.
type process struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

func (p *process) stop() int64 {
	rss := peakRSS(p.cmd.Process.Pid)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	os.RemoveAll(p.dir)
	return rss
}

// peakRSS reads the process's high-water resident set size (VmHWM).
func peakRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cirrusServer is `cirrus serve` on the embedded defaults, with its request
// log read for the DynamoDB meter.
type cirrusServer struct {
	process
	client, federation string
	mu                 sync.Mutex
	logged             map[string]usage
}

func startCirrus(ctx context.Context) (*cirrusServer, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cirrus-bench-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "cirrus")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cirrus")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build: %v\n%s", err, out)
	}
	s := &cirrusServer{client: freeAddr(), federation: freeAddr(), logged: map[string]usage{}}
	s.dir = dir
	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = append(os.Environ(),
		"CIRRUS_DATA_DIR="+filepath.Join(dir, "data"),
		"CIRRUS_CLIENT_LISTEN="+s.client,
		"CIRRUS_FEDERATION_LISTEN="+s.federation)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.done = make(chan struct{})
	go func() { s.readLog(stderr); s.cmd.Wait(); close(s.done) }()
	if err := waitReady(ctx, "http://"+s.client+"/_matrix/client/versions", s.done); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// readLog keeps each request's DynamoDB usage by request ID.
func (s *cirrusServer) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			DynamoDB  usage  `json:"dynamodb"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "request" {
			continue
		}
		s.mu.Lock()
		s.logged[line.RequestID] = line.DynamoDB
		s.mu.Unlock()
	}
}

func (s *cirrusServer) name() string  { return "cirrus" }
func (s *cirrusServer) metered() bool { return true }
func (s *cirrusServer) url(ep endpoint) string {
	if ep.Federation {
		return "https://" + s.federation + ep.Path
	}
	return "http://" + s.client + ep.Path
}
func (s *cirrusServer) usage(id string) (usage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.logged[id]
	return u, ok
}

// dendriteServer is the baseline: Dendrite v0.13.8 on SQLite, every API on
// one plain HTTP port.
type dendriteServer struct {
	process
	addr string
}

func (d *dendriteServer) name() string               { return "dendrite" }
func (d *dendriteServer) metered() bool              { return false }
func (d *dendriteServer) url(ep endpoint) string     { return "http://" + d.addr + ep.Path }
func (d *dendriteServer) usage(string) (usage, bool) { return usage{}, false }

func startDendrite(ctx context.Context) (*dendriteServer, error) {
	bins, err := buildDendrite(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dendrite-bench-")
	if err != nil {
		return nil, err
	}
	d := &dendriteServer{addr: freeAddr()}
	d.dir = dir
	keys := exec.CommandContext(ctx, filepath.Join(bins, "generate-keys"), "-private-key", "matrix_key.pem")
	keys.Dir = dir
	if out, err := keys.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("generate-keys: %v\n%s", err, out)
	}
	cfg, err := exec.CommandContext(ctx, filepath.Join(bins, "generate-config"), "-dir", dir, "-server", "localhost").Output()
	if err != nil {
		return nil, fmt.Errorf("generate-config: %w", err)
	}
	// Serve the same .well-known documents as Cirrus does.
	yaml := strings.Replace(string(cfg), `well_known_server_name: ""`, `well_known_server_name: "localhost:8448"`, 1)
	yaml = strings.Replace(yaml, `well_known_client_name: ""`, `well_known_client_name: "http://`+d.addr+`"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(filepath.Join(bins, "dendrite"), "-config", "dendrite.yaml", "-http-bind-address", d.addr)
	d.cmd.Dir = dir
	logFile, err := os.Create(filepath.Join(dir, "dendrite.log"))
	if err != nil {
		return nil, err
	}
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.done = make(chan struct{})
	go func() { d.cmd.Wait(); logFile.Close(); close(d.done) }()
	if err := waitReady(ctx, "http://"+d.addr+"/_matrix/client/versions", d.done); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// buildDendrite builds Dendrite v0.13.8 (github.com/matrix-org/dendrite,
// Apache-2.0) in a throwaway module in the user's cache folder, once; its
// source never enters this repository.
func buildDendrite(ctx context.Context) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "cirrus-bench", "dendrite-v0.13.8")
	if _, err := os.Stat(filepath.Join(dir, "dendrite")); err == nil {
		return dir, nil
	}
	fmt.Fprintln(os.Stderr, "bench: building Dendrite v0.13.8 for the baseline (once, a few minutes) in", dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	files := map[string]string{
		"go.mod":   "module cirrusbench/dendrite\n\ngo 1.26.8\n",
		"tools.go": "//go:build tools\n\npackage tools\n\nimport _ \"github.com/matrix-org/dendrite/cmd/dendrite\"\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return "", err
		}
	}
	steps := [][]string{
		{"go", "get", "github.com/matrix-org/dendrite@v0.13.8"},
		{"go", "mod", "tidy"},
		{"go", "build", "-o", "generate-keys", "github.com/matrix-org/dendrite/cmd/generate-keys"},
		{"go", "build", "-o", "generate-config", "github.com/matrix-org/dendrite/cmd/generate-config"},
		{"go", "build", "-o", "dendrite", "github.com/matrix-org/dendrite/cmd/dendrite"},
	}
	for _, step := range steps {
		cmd := exec.CommandContext(ctx, step[0], step[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v\n%s", strings.Join(step, " "), err, lastLines(out, 15))
		}
	}
	return dir, nil
}

func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("server exited during start")
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 60s", url)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the bench inside the repository")
	}
	return filepath.Dir(mod), nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
