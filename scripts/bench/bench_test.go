package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ramp := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(n-i) * time.Millisecond // descending: percentile sorts
		}
		return d
	}
	for _, tt := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{0, 0.5, 0},
		{1, 0.99, 1 * time.Millisecond},
		{100, 0.50, 50 * time.Millisecond},
		{100, 0.99, 99 * time.Millisecond},
		{200, 0.99, 198 * time.Millisecond},
		{500, 0.99, 495 * time.Millisecond},
		{3, 0.50, 2 * time.Millisecond},
		{10, 1, 10 * time.Millisecond},
	} {
		d := ramp(tt.n)
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(1..%d ms, %v) = %v, want %v", tt.n, tt.p, got, tt.want)
		}
		if tt.n > 1 && d[0] != time.Duration(tt.n)*time.Millisecond {
			t.Errorf("percentile reordered its input")
		}
	}
}

func TestRequestLog_Match(t *testing.T) {
	l := newRequestLog("")
	line := func(id string, calls int, rcu, wcu, dur float64) string {
		return fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"request","request_id":%q,"method":"GET","route":"GET /x","path":"/x","status":200,"bytes":2,"duration_ms":%v,"dynamodb":{"calls":%d,"rcu":%v,"wcu":%v}}`+"\n", id, dur, calls, rcu, wcu)
	}
	// Lines arrive in arbitrary chunks, with the banner and other messages.
	text := "\nCirrus is running.\n" + line("a", 1, 0.5, 0, 0.2) + `{"level":"INFO","msg":"stopped"}` + "\n" +
		line("b", 3, 1.5, 2, 0.4) + line("c", 0, 0, 0, 9)
	for len(text) > 0 {
		k := min(7, len(text))
		l.Write([]byte(text[:k]))
		text = text[k:]
	}
	l.Write([]byte(`{"msg":"request","request_id":"partial"`)) // no newline yet: not seen

	found, missing := l.match([]string{"a", "b", "partial", "nope"}, 0)
	if len(found) != 2 || missing != 2 {
		t.Fatalf("match: found %d, missing %d; want 2 and 2", len(found), missing)
	}
	sum, p50 := summarise(found)
	if sum != (usage{Calls: 4, RCU: 2, WCU: 2}) {
		t.Errorf("summarise usage = %+v, want calls 4, rcu 2, wcu 2", sum)
	}
	if p50 == nil || *p50 != 0.2 {
		t.Errorf("summarise p50 = %v, want 0.2", p50)
	}
	if e, ok := l.lookup("c"); !ok || e.Status != 200 || e.Route != "GET /x" || e.DurationMS != 9 {
		t.Errorf("lookup(c) = %+v, %v", e, ok)
	}
	if got := l.recent(); !strings.Contains(got, "Cirrus is running.") || !strings.Contains(got, `"stopped"`) || strings.Contains(got, `"request_id":"a"`) {
		t.Errorf("recent() = %q, want the non-request lines only", got)
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tcirrus\nVmPeak:\t 1300000 kB\nVmHWM:\t   21316 kB\nVmRSS:\t   20000 kB\n"
	got, err := parseVmHWM([]byte(status))
	if err != nil || got != 21316*1024 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 21316*1024)
	}
	if _, err := parseVmHWM([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmHWM without VmHWM: no error")
	}
}

func TestRatios(t *testing.T) {
	rs := ratios([]result{
		{Endpoint: "/a", Server: "cirrus", P50MS: 1, P99MS: 3},
		{Endpoint: "/a", Server: "dendrite", P50MS: 2, P99MS: 2},
		{Endpoint: "/b", Server: "cirrus", P50MS: 1, P99MS: 1}, // no baseline: no ratio
	})
	if len(rs) != 1 || rs[0] != (ratio{Endpoint: "/a", P50: 0.5, P99: 1.5}) {
		t.Errorf("ratios = %+v", rs)
	}
}

func TestRequestLog_File(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cirrus.log")
	l := newRequestLog(path)
	if _, missing := l.match([]string{"x"}, 0); missing != 1 { // no file yet
		t.Fatalf("match before the file exists: missing %d", missing)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(`{"msg":"request","request_id":"x","status":200,"dynamodb":{"calls":1,"rcu":0.5,"wcu":1}}` + "\n" + `{"msg":"request","request_id":"y"`)
	if found, missing := l.match([]string{"x", "y"}, 0); len(found) != 1 || missing != 1 {
		t.Fatalf("first read: found %d, missing %d", len(found), missing)
	}
	f.WriteString(`,"status":200,"dynamodb":{"calls":2,"rcu":0,"wcu":0}}` + "\n")
	found, missing := l.match([]string{"x", "y"}, 0)
	if missing != 0 || found[1].DynamoDB.Calls != 2 {
		t.Fatalf("second read: found %+v, missing %d", found, missing)
	}
}
