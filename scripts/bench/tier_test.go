package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 250, stime 75.
	stat := "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 12 0 5000 123456 789 18446744073709551615\n"
	if got, err := parseStatCPU([]byte(stat)); err != nil || got != 325 {
		t.Errorf("parseStatCPU = %d, %v; want 325", got, err)
	}
	for _, bad := range []string{"", "1234 no name S 1", "1234 (x) S 1 2 3", "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 a 75 0"} {
		if got, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tcirrus\nVmPeak:\t  900000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n"
	if got, err := parseStatusKB([]byte(status), "VmRSS"); err != nil || got != 40<<20 {
		t.Errorf("VmRSS = %d, %v; want %d", got, err, 40<<20)
	}
	if got, err := parseStatusKB([]byte(status), "VmHWM"); err != nil || got != 50<<20 {
		t.Errorf("VmHWM = %d, %v; want %d", got, err, 50<<20)
	}
	if _, err := parseStatusKB([]byte(status), "VmSwap"); err == nil {
		t.Error("VmSwap: want an error for a missing field")
	}
	if _, err := parseStatusKB([]byte("VmRSS:\t12 MB\n"), "VmRSS"); err == nil {
		t.Error("VmRSS in MB: want an error")
	}
}

func TestReadProc_Self(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.RSS <= 0 || s.HWM < s.RSS || s.CPUTicks < 0 {
		t.Errorf("readProc(self) = %+v", s)
	}
}

func TestCPUPercent(t *testing.T) {
	if got := cpuPercent(150, 30*time.Second); math.Abs(got-5) > 1e-9 {
		t.Errorf("150 ticks over 30 s = %v%%, want 5%%", got)
	}
	if got := cpuPercent(10, 0); got != 0 {
		t.Errorf("over no time = %v, want 0", got)
	}
}

func TestTierUsage(t *testing.T) {
	l := newRequestLog("")
	line := func(id, route string, calls int, rcu, wcu, dur float64) string {
		return fmt.Sprintf(`{"msg":"request","request_id":%q,"route":%q,"status":200,"duration_ms":%v,"dynamodb":{"calls":%d,"rcu":%v,"wcu":%v}}`+"\n", id, route, dur, calls, rcu, wcu)
	}
	job := `{"msg":"job","kind":"sync-news","dynamodb":{"calls":0,"rcu":0,"wcu":0}}` + "\n"
	l.Write([]byte(line("a", "GET /_matrix/client/v3/sync", 7, 4, 0, 25000) + line("b", "GET /_matrix/client/versions", 1, 9, 9, 5)))
	before := usageOf(l)
	l.Write([]byte(line("c", "GET /_matrix/client/r0/sync", 6, 3.5, 0, 24000) + job + line("d", "GET /_matrix/client/v3/sync", 8, 4.5, 1, 26000) + job))
	d := usageOf(l).minus(before)
	want := tierUsage{Lines: 2, Sum: usage{Calls: 14, RCU: 8, WCU: 1}, PollMS: 50000, Jobs: 2}
	if d != want {
		t.Errorf("usage over the window = %+v, want %+v", d, want)
	}
}

func TestTierReportFill(t *testing.T) {
	rep := &tierReport{Polls: 100}
	rep.fill(tierUsage{Lines: 10, Sum: usage{Calls: 120, RCU: 60, WCU: 1}, PollMS: 250_000}, time.Minute)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if !rep.Measured || rep.Lines != 10 || rep.PollSeconds != 250 || rep.WindowSeconds != 60 {
		t.Errorf("report = %+v", rep)
	}
	// A minute's window: per minute is the window's sum.
	near("calls per minute", rep.PerMinute.Calls, 120)
	near("RCU per minute", rep.PerMinute.RCU, 60)
	// 250 poll-seconds held: per poll-minute is the sum × 60 / 250.
	near("calls per poll-minute", rep.PerPollMinute.Calls, 28.8)
	near("RCU per poll-minute", rep.PerPollMinute.RCU, 14.4)
	near("WCU per poll-minute", rep.PerPollMinute.WCU, 0.24)
	near("RCU per client-hour", rep.ClientHour.RCU, 864)
	near("WCU per client-hour", rep.ClientHour.WCU, 14.4)
	// 864 × $0.125 + 14.4 × $0.625 per million.
	near("DynamoDB dollars per client-hour", rep.ClientHour.DynamoDBDollars, 117e-6)
	near("task dollars per client-hour", rep.ClientHour.TaskDollars, 0.0149/100)
	near("Lambda dollars per client-hour", rep.ClientHour.LambdaDollars, 0.012)

	var b bytes.Buffer
	rep.WakeUp = tierWakeUp{Samples: 20, P50MS: 15, P99MS: 80, NewsMessages: 21, ThroughQueue: true}
	rep.NewsQueue, rep.PollIntervalMS, rep.TimeoutMS = true, 5000, 25000
	printTable(&b, &report{Tier: rep})
	for _, want := range []string{
		"100 idle long-polls", "woken through the news queue", "per poll-minute 28.80 calls, 14.400 RCU",
		"864.0 RCU, 14.40 WCU = $0.0001170", "Lambda at 256 MB: $0.012", "p50 15.0 ms, p99 80.0 ms over 20 messages", "through the queue: 21 news messages",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the tier section lacks %q:\n%s", want, b.String())
		}
	}
}

// The tier workload on real processes, with few polls and a short window:
// a writer cirrus serve and a cirrus sync-tier on one DynamoDB, the news
// queue on fauxqs, and without it when it cannot start. Its figures are
// filled and the wake-ups answered.
func TestTierWorkload_Cirrus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cirrus and runs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := buildCirrus(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { tierTimeout = d }(tierTimeout)
	tierTimeout = 5 * time.Second
	run := func(t *testing.T) *tierReport {
		var progress bytes.Buffer
		rep := runTier(ctx, bin, tierOptions{Polls: 20, Window: 10 * time.Second, WakeUps: 3}, &progress)
		t.Logf("progress:\n%s", progress.String())
		if rep.Failed != "" {
			t.Fatalf("failed: %s", rep.Failed)
		}
		if !rep.Measured || rep.Users != 1 || rep.RSSBytes <= 0 || rep.HWMBytes < rep.RSSBytes || rep.RSSBeforeBytes <= 0 || rep.CPUPercent < 0 {
			t.Errorf("process figures: %+v", rep)
		}
		// 20 polls of 5 s over 10 s: dozens of request lines, each with a read.
		if rep.Lines == 0 || rep.PollSeconds <= 0 || rep.PerMinute.RCU <= 0 || rep.PerPollMinute.RCU <= 0 || rep.ClientHour.DynamoDBDollars <= 0 {
			t.Errorf("DynamoDB figures: lines %d, %.1f poll-seconds, per minute %+v, per poll-minute %+v", rep.Lines, rep.PollSeconds, rep.PerMinute, rep.PerPollMinute)
		}
		if rep.WaitingMax != 20 || rep.PollErrors != 0 {
			t.Errorf("waiting %d to %d, %d poll errors (%s)", rep.WaitingMin, rep.WaitingMax, rep.PollErrors, rep.FirstPollError)
		}
		if w := rep.WakeUp; w.Failed != "" || w.Samples != 3 {
			t.Errorf("wake-ups: %+v", w)
		}
		return rep
	}

	t.Run("news queue", func(t *testing.T) {
		rep := run(t)
		if want := float64(tierPollWithQueue.Milliseconds()); rep.NoQueue != "" || !rep.NewsQueue || rep.PollIntervalMS != want {
			t.Errorf("queue %v (%q), poll interval %v ms; want the queue and %v ms", rep.NewsQueue, rep.NoQueue, rep.PollIntervalMS, want)
		}
		if w := rep.WakeUp; w.NewsMessages == 0 {
			t.Errorf("wake-ups: %+v, want news messages through the queue", w)
		}
	})
	t.Run("no queue", func(t *testing.T) {
		defer func(f func(context.Context, func(string, ...any)) ([]string, func(), error)) { startNewsQueue = f }(startNewsQueue)
		startNewsQueue = func(context.Context, func(string, ...any)) ([]string, func(), error) {
			return nil, nil, errors.New("no fauxqs in this test")
		}
		rep := run(t)
		if rep.NewsQueue || rep.NoQueue != "no fauxqs in this test" || rep.PollIntervalMS != 1000 {
			t.Errorf("queue %v (%q), poll interval %v ms; want none, the reason, and 1000 ms", rep.NewsQueue, rep.NoQueue, rep.PollIntervalMS)
		}
		if w := rep.WakeUp; w.NewsMessages != 0 || w.ThroughQueue {
			t.Errorf("wake-ups: %+v, want none through a queue", w)
		}
		var b bytes.Buffer
		printTier(&b, &report{Tier: rep})
		if !strings.Contains(b.String(), "WITHOUT the news queue (no fauxqs in this test)") || !strings.Contains(b.String(), "not through the queue") {
			t.Errorf("the section without the queue:\n%s", b.String())
		}
	})
}
