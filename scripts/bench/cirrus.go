package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logEntry is the part of Cirrus's per-request log line the bench reads
// (shared/httpapi.Logging writes it).
type logEntry struct {
	RequestID  string  `json:"request_id"`
	Route      string  `json:"route"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	DynamoDB   usage   `json:"dynamodb"`
	// Kind is a queue job's kind, on a job's line.
	Kind string `json:"kind"`
}

// tally is the lines of one route or job kind so far and their usage.
type tally struct {
	Lines int
	Sum   usage
}

// usage is what one request cost in DynamoDB.
type usage struct {
	Calls float64 `json:"calls"`
	RCU   float64 `json:"rcu"`
	WCU   float64 `json:"wcu"`
	// RoundTrips is the calls on the request's critical path, one after
	// the other; nil when the log line does not count them.
	RoundTrips *float64 `json:"round_trips,omitempty"`
}

// parseRequestLine reads one JSON log line; ok is false for lines that are
// not a request's line (the banner, other messages).
func parseRequestLine(line []byte) (e logEntry, ok bool) {
	msg, e := parseLine(line)
	if msg != "request" || e.RequestID == "" {
		return logEntry{}, false
	}
	return e, true
}

// parseJobLine reads a queue job's log line (shared/queue's Dispatcher
// writes it, with the job's DynamoDB meter); ok is false for other lines.
func parseJobLine(line []byte) (e logEntry, ok bool) {
	msg, e := parseLine(line)
	return e, msg == "job"
}

// parseLine reads a JSON log line's message and the fields of logEntry;
// the message is "" for lines that are not JSON.
func parseLine(line []byte) (string, logEntry) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return "", logEntry{}
	}
	var l struct {
		Msg string `json:"msg"`
		logEntry
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return "", logEntry{}
	}
	return l.Msg, l.logEntry
}

// requestLog indexes a server's request lines by request ID and keeps the
// last other lines for error messages. The server writes its stderr to a
// file, read only between measurements: parsing as it is written would take
// CPU from the measured server and make it wait on a pipe.
type requestLog struct {
	path   string // the log file; empty when lines come through Write only
	fileMu sync.Mutex
	offset int64

	mu      sync.Mutex
	partial []byte
	byID    map[string]logEntry
	jobs    []logEntry // the queue jobs' lines, in the order written
	// tallies adds up the lines by route, and by "job " and kind.
	tallies map[string]tally
	tail    []string
}

const tailLines = 40

func newRequestLog(path string) *requestLog {
	return &requestLog{path: path, byID: make(map[string]logEntry)}
}

// refresh reads what the server wrote to the file since the last refresh.
func (l *requestLog) refresh() {
	if l.path == "" {
		return
	}
	l.fileMu.Lock()
	defer l.fileMu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, l.offset, 1<<62))
	if err != nil {
		return
	}
	l.offset += int64(len(data))
	l.Write(data)
}

func (l *requestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		if e, ok := parseRequestLine(line); ok {
			l.byID[e.RequestID] = e
			l.count(e.Route, e)
		} else if e, ok := parseJobLine(line); ok {
			l.jobs = append(l.jobs, e)
			l.count("job "+e.Kind, e)
		} else {
			l.tail = append(l.tail, string(line))
			if len(l.tail) > tailLines {
				l.tail = l.tail[len(l.tail)-tailLines:]
			}
		}
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *requestLog) count(key string, e logEntry) {
	if l.tallies == nil {
		l.tallies = make(map[string]tally)
	}
	t := l.tallies[key]
	t.Lines++
	t.Sum.Calls += e.DynamoDB.Calls
	t.Sum.RCU += e.DynamoDB.RCU
	t.Sum.WCU += e.DynamoDB.WCU
	l.tallies[key] = t
}

// snapshot returns the tallies so far, once the job lines have stopped for
// quiet.
func (l *requestLog) snapshot(quiet time.Duration) map[string]tally {
	l.jobsSince(0, quiet)
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.tallies)
}

// since is what the lines of the keys accepted by match added from before
// to after (two snapshots).
func since(before, after map[string]tally, match func(key string) bool) tally {
	var d tally
	for k, a := range after {
		if !match(k) {
			continue
		}
		b := before[k]
		d.Lines += a.Lines - b.Lines
		d.Sum.Calls += a.Sum.Calls - b.Sum.Calls
		d.Sum.RCU += a.Sum.RCU - b.Sum.RCU
		d.Sum.WCU += a.Sum.WCU - b.Sum.WCU
	}
	return d
}

// jobCount is how many queue job lines the server has written so far.
func (l *requestLog) jobCount() int {
	l.refresh()
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.jobs)
}

// jobsSince returns the job lines written after the first from, once no new
// one has come for quiet (a job logs its line just after its work is
// visible), waiting 10 s at most.
func (l *requestLog) jobsSince(from int, quiet time.Duration) []logEntry {
	deadline := time.Now().Add(10 * time.Second)
	n, changed := -1, time.Now()
	for {
		if c := l.jobCount(); c != n {
			n, changed = c, time.Now()
		}
		if time.Since(changed) >= quiet || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.jobs[min(from, len(l.jobs)):])
}

func (l *requestLog) lookup(id string) (logEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.byID[id]
	return e, ok
}

// lastError is the last error line the server wrote ("" for none), such
// as Cirrus's "request failed" with the error behind a 500.
func (l *requestLog) lastError() string {
	l.refresh()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.tail) - 1; i >= 0; i-- {
		if strings.Contains(l.tail[i], `"level":"ERROR"`) {
			return l.tail[i]
		}
	}
	return ""
}

func (l *requestLog) recent() string {
	l.refresh()
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "\n")
}

// match looks up the log lines of request IDs. The server writes a line
// just after answering, so it waits up to wait for the last ones.
func (l *requestLog) match(ids []string, wait time.Duration) (found []logEntry, missing int) {
	deadline := time.Now().Add(wait)
	for {
		l.refresh()
		found, missing = found[:0], 0
		for _, id := range ids {
			if e, ok := l.lookup(id); ok {
				found = append(found, e)
			} else {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return found, missing
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// buildCirrus builds ./cmd/cirrus of the module the bench runs in.
func buildCirrus(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "cirrus")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cirrus")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/cirrus: %w\n%s", err, out)
	}
	return bin, nil
}

// startCirrus runs `cirrus serve` on the embedded DynamoDB, in a fresh data
// folder, on free loopback ports, with the given sync poll interval, and
// waits until it answers. extraEnv is added to its environment
// (DYNAMODB_ENDPOINT=... runs it on another DynamoDB).
func startCirrus(ctx context.Context, bin string, pollInterval time.Duration, extraEnv ...string) (*server, error) {
	dir, err := os.MkdirTemp("", "cirrus-bench-cirrus-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "cirrus.log")
	s := &server{Name: "cirrus", dir: dir, Log: newRequestLog(logPath), pollInterval: pollInterval}
	s.output = s.Log.recent
	clientAddr, err1 := freeAddr()
	fedAddr, err2 := freeAddr()
	if err1 != nil || err2 != nil {
		s.stop()
		return nil, fmt.Errorf("free ports: %v %v", err1, err2)
	}
	s.ClientURL, s.FederationURL = "http://"+clientAddr, "https://"+fedAddr

	// Only the bench's settings: no CIRRUS_* or DYNAMODB_ENDPOINT from the
	// caller's environment, so the run is the embedded default everywhere.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CIRRUS_") && !strings.HasPrefix(kv, "DYNAMODB_ENDPOINT=") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"CIRRUS_DATA_DIR="+filepath.Join(dir, "data"),
		"CIRRUS_CLIENT_LISTEN="+clientAddr,
		"CIRRUS_FEDERATION_LISTEN="+fedAddr,
		"CIRRUS_LOG_LEVEL=info",
		"CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret,
		// The login workload logs in hundreds of times a minute from one address.
		"CIRRUS_RATE_LIMITS_LOGIN_PER_ADDRESS=0",
		"CIRRUS_RATE_LIMITS_LOGIN_PER_ACCOUNT=0",
		"CIRRUS_SYNC_POLL_INTERVAL_MS="+strconv.FormatInt(pollInterval.Milliseconds(), 10),
	)
	for _, kv := range extraEnv {
		if kv == nameByListener {
			s.serverName = fedAddr
			kv = "CIRRUS_SERVER_NAME=" + fedAddr
		}
		env = append(env, kv)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		s.stop()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	if err := startProcess(s, bin, []string{"serve"}, env, logFile, logFile); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.waitReady(ctx, s.ClientURL+"/_matrix/client/versions", 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	// The listeners that answered must be this process's: its log must have
	// the request IDs sent to them.
	for _, url := range []string{s.ClientURL + "/_matrix/client/versions", s.FederationURL + "/_matrix/federation/v1/version"} {
		id := "bench-ready-" + randomHex(6)
		if _, err := probe(ctx, s.client, url, id); err != nil {
			s.stop()
			return nil, fmt.Errorf("cirrus: %w", err)
		}
		if _, missing := s.Log.match([]string{id}, 2*time.Second); missing > 0 {
			s.stop()
			return nil, errPortTaken
		}
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
