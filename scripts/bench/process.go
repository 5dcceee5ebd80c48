package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// stopGrace is how long a server gets to exit after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// errPortTaken means another process got a port between our choice and the
// server's bind; starting again on new ports is the cure.
var errPortTaken = errors.New("port taken by another process")

// server is one running server process under measurement.
type server struct {
	Name string
	// ClientURL serves the client endpoints (plain HTTP); FederationURL the
	// federation ones (HTTPS with a self-signed certificate).
	ClientURL, FederationURL string
	// serverName is the server's Matrix name when the other servers of the
	// run reach it by name (the federation workloads); "" otherwise.
	serverName string
	// Log holds the per-request log lines, nil for a server whose log has no
	// DynamoDB figures.
	Log *requestLog

	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited
	waitErr error         // valid after done
	output  func() string // recent output, for error messages
	dir     string        // temp folder, removed by stop
	client  *http.Client
	peakRSS int64
	token   string       // the bench user's access token, for authenticated endpoints
	userID  string       // the bench user's ID
	room    benchRoom    // the room of the room workloads
	txns    atomic.Int64 // transaction IDs used, for a new one in every request
	sync    syncFixture  // the sync user and its rooms, for the sync workloads
	// pollInterval is Cirrus's sync.poll_interval_ms; 0 for Dendrite.
	pollInterval time.Duration
	// startErr, when set, is why the server could not be started: every
	// workload fails on it.
	startErr error
	// latency is what the DynamoDB latency model adds to each of its
	// DynamoDB calls (latency.go); 0 for the other servers.
	latency time.Duration
	// release, when set, stops what the server runs on in the bench
	// process (the modelled DynamoDB), once the server has stopped.
	release func()
}

// startProcess starts bin and returns at once; s.done closes when it exits.
func startProcess(s *server, bin string, args, env []string, stdout, stderr io.Writer) error {
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env
	s.cmd.Dir = s.dir
	s.cmd.Stdout, s.cmd.Stderr = stdout, stderr
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.done = make(chan struct{})
	go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()
	s.client = newHTTPClient()
	return nil
}

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			// Both federation listeners offer h2 over TLS, as a real one would.
			ForceAttemptHTTP2: true,
			// Local federation listeners have self-signed certificates.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
	}
}

// exited says whether the process has ended, and how.
func (s *server) exited() (bool, error) {
	select {
	case <-s.done:
		if s.waitErr == nil {
			return true, errors.New("exited")
		}
		return true, s.waitErr
	default:
		return false, nil
	}
}

// waitReady polls GET url until it answers 200, the process exits, or the
// time is up.
func (s *server) waitReady(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if gone, err := s.exited(); gone {
			out := s.output()
			if strings.Contains(out, "address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("%s %v before answering; its last output:\n%s", s.Name, err, indent(out))
		}
		res, err := probe(ctx, s.client, url, "")
		if err == nil && res.status == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %s within %s; its last output:\n%s", s.Name, url, timeout, indent(s.output()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type probeResult struct {
	status int
	body   []byte
}

// probe sends one GET, with the given X-Request-Id when not empty.
func probe(ctx context.Context, c *http.Client, url, requestID string) (probeResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return probeResult{}, err
	}
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	res, err := c.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return probeResult{status: res.StatusCode, body: body}, err
}

// stop records the peak RSS, sends SIGTERM, waits, kills after stopGrace, and
// removes the temp folder. It is safe to call more than once.
func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		if gone, _ := s.exited(); !gone {
			if rss, err := peakRSS(s.cmd.Process.Pid); err == nil {
				s.peakRSS = rss
			}
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(stopGrace):
				fmt.Fprintf(os.Stderr, "bench: %s (pid %d) still running %s after SIGTERM: SIGKILL\n", s.Name, s.cmd.Process.Pid, stopGrace)
				s.cmd.Process.Kill()
				<-s.done
			}
		}
		s.cmd = nil
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	if s.release != nil {
		s.release()
		s.release = nil
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// peakRSS reads the peak resident set size (VmHWM) of a process, in bytes.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKB(data, "VmHWM")
}

// freeAddr returns a loopback address with a port free at the time of asking.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startRetrying calls start up to three times while ports turn out taken.
func startRetrying(start func() (*server, error)) (*server, error) {
	for attempt := 1; ; attempt++ {
		s, err := start()
		if errors.Is(err, errPortTaken) && attempt < 3 {
			fmt.Fprintf(os.Stderr, "bench: a port was taken meanwhile, starting again on new ports\n")
			continue
		}
		return s, err
	}
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (nothing)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// tailFile returns the last lines of a file, for error messages.
func tailFile(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}
