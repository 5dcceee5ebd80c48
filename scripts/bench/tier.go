package main

// The sync tier workload (issue 18): idle /sync long-polls held by one
// `cirrus sync-tier` process, as the Fargate task holds them, beside a
// writer `cirrus serve` on the same DynamoDB (the embedded one, served by
// the bench) that sends its news to the tier through an SQS queue (fauxqs).
// Once every poll waits, the bench measures over a window the tier's
// memory, its CPU while idle, and the DynamoDB units of its request lines;
// then, the polls still held, how soon a message sent through the writer
// reaches a sync waiting in the tier.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	cirrussync "github.com/cirrus-matrix/cirrus/shared/sync"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

const (
	// tierUserPolls is how many polls each user holds at once: registering
	// costs a bcrypt, so 1,000 polls are 50 users' 20 devices.
	tierUserPolls = 20
	// tierPollWithQueue and tierPollWithout are the tier's stream poll
	// intervals with the news queue (a safety net) and without it, as the
	// stack sets them.
	tierPollWithQueue = 25 * time.Second
	tierPollWithout   = time.Second
	// tierServerName is the writer's name (serve's default), which the tier
	// must share to read the same users.
	tierServerName = "localhost:8008"
	// tierWakeUps is how many wake-ups are timed.
	tierWakeUps = 20
	// tierRampBound bounds the wait until the tier holds every poll.
	tierRampBound = 3 * time.Minute
	// registerConcurrency is how many users are registered at once.
	registerConcurrency = 4

	// clockTicks is the unit of utime and stime in /proc/<pid>/stat
	// (USER_HZ, 100 on Linux whatever the kernel's HZ).
	clockTicks = 100

	// Prices, us-east-1: DynamoDB on demand, Lambda at 256 MB holding a
	// long-poll for an hour, and the tier's Fargate task (ARM, 0.25 vCPU,
	// 0.5 GB, on demand) with its public IPv4 address.
	dollarsPerMillionRRU       = 0.125
	dollarsPerMillionWRU       = 0.625
	lambdaDollarsPerClientHour = 0.012
	taskDollarsPerHour         = 0.0099 + 0.005
	// taskVCPU is the task's share of a core.
	taskVCPU = 0.25
)

// tierTimeout is the timeout of the idle polls: the tier's longest
// (sync.max_timeout_ms); a variable for tests.
var tierTimeout = 25 * time.Second

// tierOptions is the shape of the workload.
type tierOptions struct {
	Polls   int
	Window  time.Duration
	WakeUps int
}

// tierReport is what the tier workload found.
type tierReport struct {
	Polls          int     `json:"polls"`
	Users          int     `json:"users"`
	TimeoutMS      float64 `json:"timeout_ms"`
	PollIntervalMS float64 `json:"poll_interval_ms"`
	NewsQueue      bool    `json:"news_queue"`
	// NoQueue is why the tier ran without the news queue.
	NoQueue       string  `json:"no_queue,omitempty"`
	RampSeconds   float64 `json:"ramp_seconds"`
	WindowSeconds float64 `json:"window_seconds"`
	// WaitingMin and WaitingMax are the least and most waiting polls the
	// tier's health answered during the window.
	WaitingMin int `json:"waiting_min"`
	WaitingMax int `json:"waiting_max"`
	// Measured is set once the window's figures are in.
	Measured bool `json:"measured"`
	// The tier's resident memory: before the polls, at the window's end,
	// the most sampled in it, and its peak (VmHWM) at the end.
	RSSBeforeBytes int64   `json:"rss_before_polls_bytes"`
	RSSBytes       int64   `json:"rss_bytes"`
	RSSMaxBytes    int64   `json:"rss_max_bytes"`
	HWMBytes       int64   `json:"hwm_bytes"`
	CPUPercent     float64 `json:"cpu_percent_of_one_core"`
	// Lines are the tier's sync request lines that completed in the window,
	// PollSeconds the time those requests were held.
	Lines         int        `json:"lines"`
	PollSeconds   float64    `json:"poll_seconds"`
	Usage         usage      `json:"usage"`
	PerMinute     usage      `json:"per_minute"`
	PerPollMinute usage      `json:"per_poll_minute"`
	ClientHour    clientHour `json:"per_client_hour"`
	// PollErrors counts the polls that failed; FirstPollError is the first.
	PollErrors     int64      `json:"poll_errors"`
	FirstPollError string     `json:"first_poll_error,omitempty"`
	WakeUp         tierWakeUp `json:"wake_up"`
	Failed         string     `json:"failed,omitempty"`
}

// clientHour is the cost of one client holding a long-poll for an hour.
type clientHour struct {
	RCU             float64 `json:"rcu"`
	WCU             float64 `json:"wcu"`
	DynamoDBDollars float64 `json:"dynamodb_dollars"`
	// TaskDollars is the Fargate task's hour shared by the polls held.
	TaskDollars   float64 `json:"task_dollars"`
	LambdaDollars float64 `json:"lambda_dollars"`
}

// tierWakeUp is how soon a message sent through the writer reached a sync
// waiting in the tier.
type tierWakeUp struct {
	Samples int     `json:"samples"`
	Early   int     `json:"early,omitempty"` // answered before the send did
	P50MS   float64 `json:"p50_ms"`
	P99MS   float64 `json:"p99_ms"`
	// NewsMessages is how many news messages the tier took from the queue
	// during the wake-ups (its job lines).
	NewsMessages int    `json:"news_messages"`
	ThroughQueue bool   `json:"through_queue"`
	Failed       string `json:"failed,omitempty"`
}

// runTier runs the tier workload; a failure is reported in the result.
func runTier(ctx context.Context, bin string, o tierOptions, stderr io.Writer) *tierReport {
	rep := &tierReport{Polls: o.Polls, TimeoutMS: ms(tierTimeout), WindowSeconds: o.Window.Seconds()}
	if err := measureTier(ctx, bin, o, rep, stderr); err != nil {
		rep.Failed = err.Error()
		fmt.Fprintf(stderr, "bench: sync tier: FAILED: %v\n", err)
	}
	return rep
}

func measureTier(ctx context.Context, bin string, o tierOptions, rep *tierReport, stderr io.Writer) error {
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "bench: sync tier: "+format+"\n", args...)
	}
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer db.Close()

	queueEnv, stopQueue, err := startNewsQueue(ctx, progress)
	if err != nil {
		rep.NoQueue = err.Error()
		progress("running without the news queue, the tier polling every %s: %v", tierPollWithout, err)
	} else {
		defer stopQueue()
	}
	rep.NewsQueue = queueEnv != nil
	poll := tierPollWithout
	if rep.NewsQueue {
		poll = tierPollWithQueue
	}
	rep.PollIntervalMS = ms(poll)

	writer, err := startRetrying(func() (*server, error) {
		// Registering 50 users from one address is a bench's doing, not an
		// attack.
		env := append([]string{"DYNAMODB_ENDPOINT=" + db.URL(), "CIRRUS_RATE_LIMITS_REGISTER_PER_ADDRESS=0"}, queueEnv...)
		return startCirrus(ctx, bin, time.Second, env...)
	})
	if err != nil {
		return fmt.Errorf("start the writer: %w", err)
	}
	defer writer.stop()
	if err := setupUser(ctx, writer); err != nil {
		return fmt.Errorf("writer: %w", err)
	}
	tier, err := startRetrying(func() (*server, error) { return startTier(ctx, bin, db.URL(), writer, poll, queueEnv) })
	if err != nil {
		return fmt.Errorf("start the tier: %w", err)
	}
	defer tier.stop()
	pid := tier.cmd.Process.Pid
	progress("writer cirrus serve pid %d on %s, cirrus sync-tier pid %d on %s, one DynamoDB (%s), news queue %v, stream poll every %s",
		writer.cmd.Process.Pid, writer.ClientURL, pid, tier.ClientURL, db.URL(), rep.NewsQueue, poll)

	watcher, err := setupWatcher(ctx, writer, tier)
	if err != nil {
		return fmt.Errorf("the wake-up's users: %w", err)
	}
	users, err := registerTierUsers(ctx, writer, o.Polls)
	if err != nil {
		return err
	}
	rep.Users = len(users)
	before, err := readProc(pid)
	if err != nil {
		return err
	}
	rep.RSSBeforeBytes = before.RSS

	pollers := newTierPollers(tier.ClientURL, o.Polls)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer func() { stopPolls(); pollers.wg.Wait() }()
	t0 := time.Now()
	if err := pollers.start(pollCtx, users, o.Polls); err != nil {
		return err
	}
	if err := pollers.awaitWaiting(ctx, o.Polls); err != nil {
		return err
	}
	rep.RampSeconds = time.Since(t0).Seconds()
	progress("%d polls of %d users waiting after %.1f s; measuring for %s once each has polled again", o.Polls, len(users), rep.RampSeconds, o.Window)
	if err := pollers.awaitFirsts(ctx, o.Polls); err != nil {
		return err
	}

	if err := measureWindow(ctx, tier, pollers, o.Window, rep); err != nil {
		return err
	}
	rep.PollErrors = pollers.errors.Load()
	if p := pollers.firstErr.Load(); p != nil {
		rep.FirstPollError = *p
	}
	progress("window: VmRSS %.1f MiB, CPU %.1f%% of a core, %.1f RCU and %.2f WCU per minute over %d request lines",
		mib(rep.RSSBytes), rep.CPUPercent, rep.PerMinute.RCU, rep.PerMinute.WCU, rep.Lines)

	rep.WakeUp = measureTierWakeUps(ctx, tier, watcher, o.WakeUps, rep.NewsQueue)
	if rep.WakeUp.Failed != "" {
		progress("wake-up FAILED: %s", rep.WakeUp.Failed)
	} else {
		progress("wake-up p50 %.1f ms, p99 %.1f ms over %d, %d news messages", rep.WakeUp.P50MS, rep.WakeUp.P99MS, rep.WakeUp.Samples, rep.WakeUp.NewsMessages)
	}
	return ctx.Err()
}

// startNewsQueue is newsQueue; tests replace it.
var startNewsQueue = newsQueue

// newsQueue starts fauxqs and creates the news queue as the stack does;
// it returns the environment that points the AWS SDK of both processes at
// it.
func newsQueue(ctx context.Context, progress func(string, ...any)) (env []string, stop func(), err error) {
	endpoint, stop, err := testenv.RunSQS(progress)
	if err != nil {
		return nil, nil, fmt.Errorf("fauxqs: %w", err)
	}
	q, err := sqs.NewFromConfig(testenv.AWSConfig(endpoint)).CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String("cirrus-bench-news-" + randomHex(4)),
		// The stack's settings: news older than a minute is worthless.
		Attributes: map[string]string{"MessageRetentionPeriod": "60", "VisibilityTimeout": "30"},
	})
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("create the news queue: %w", err)
	}
	return []string{
		"CIRRUS_SYNC_NEWS_QUEUE_URL=" + *q.QueueUrl,
		"AWS_ENDPOINT_URL_SQS=" + endpoint,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=cirrus-bench",
		"AWS_SECRET_ACCESS_KEY=cirrus-bench",
		"AWS_EC2_METADATA_DISABLED=true",
	}, stop, nil
}

// startTier runs `cirrus sync-tier` on the writer's DynamoDB, with its
// server name and signing key, configured from the environment as the
// stack configures the task, on a free loopback port.
func startTier(ctx context.Context, bin, dynamoURL string, writer *server, poll time.Duration, extraEnv []string) (*server, error) {
	dir, err := os.MkdirTemp("", "cirrus-bench-tier-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "tier.log")
	s := &server{Name: "cirrus sync-tier", dir: dir, Log: newRequestLog(logPath), pollInterval: poll}
	s.output = s.Log.recent
	addr, err := freeAddr()
	if err != nil {
		s.stop()
		return nil, err
	}
	s.ClientURL = "http://" + addr
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CIRRUS_") && !strings.HasPrefix(kv, "DYNAMODB_ENDPOINT=") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"CIRRUS_SERVER_NAME="+tierServerName,
		"CIRRUS_DYNAMODB_ENDPOINT="+dynamoURL,
		"CIRRUS_SIGNING_KEY_PATH="+filepath.Join(writer.dir, "data", "signing.key"),
		"CIRRUS_CLIENT_LISTEN="+addr,
		"CIRRUS_LOG_LEVEL=info",
		"CIRRUS_SYNC_POLL_INTERVAL_MS="+strconv.FormatInt(poll.Milliseconds(), 10),
	)
	env = append(env, extraEnv...)
	logFile, err := os.Create(logPath)
	if err != nil {
		s.stop()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	if err := startProcess(s, bin, []string{"sync-tier"}, env, logFile, logFile); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.waitReady(ctx, s.ClientURL+"/_cirrus/health", 30*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	// The listener that answered must be this process's: an unauthenticated
	// sync is logged with its request ID (the health check is not).
	id := "bench-ready-" + randomHex(6)
	if _, err := probe(ctx, s.client, s.ClientURL+"/_matrix/client/v3/sync", id); err != nil {
		s.stop()
		return nil, fmt.Errorf("sync tier: %w", err)
	}
	if _, missing := s.Log.match([]string{id}, 2*time.Second); missing > 0 {
		s.stop()
		return nil, errPortTaken
	}
	return s, nil
}

// setupWatcher registers the wake-up's watcher on the writer, in a room
// with the writer's bench user, and returns the tier as a server whose
// sync user is the watcher and whose messages the writer's bench user
// sends through the writer.
func setupWatcher(ctx context.Context, writer, tier *server) (*server, error) {
	userID, token, err := register(ctx, writer, syncUserName, benchPassword)
	if err != nil {
		return nil, err
	}
	writer.sync.userID, writer.sync.token = userID, token
	room, err := createSyncRoom(ctx, writer)
	if err != nil {
		return nil, err
	}
	if err := fillSyncRoom(ctx, writer, room, 1); err != nil {
		return nil, err
	}
	return &server{Name: tier.Name, ClientURL: tier.ClientURL, client: newHTTPClient(), sync: syncFixture{
		done: true, userID: userID, token: token, rooms: []string{room}, sender: writer, senderOwns: true,
	}}, nil
}

// registerTierUsers registers enough users on the writer for polls polls,
// tierUserPolls each, a few at once, and returns their access tokens.
func registerTierUsers(ctx context.Context, writer *server, polls int) ([]string, error) {
	tokens := make([]string, (polls+tierUserPolls-1)/tierUserPolls)
	errs := make([]error, len(tokens))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(registerConcurrency, len(tokens)) {
		wg.Go(func() {
			for i := range next {
				_, tokens[i], errs[i] = register(ctx, writer, fmt.Sprintf("tier%04d", i), benchPassword)
			}
		})
	}
	for i := range tokens {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := firstError(errs); err != nil {
		return nil, fmt.Errorf("register the polling users: %w", err)
	}
	return tokens, nil
}

// tierPollers are the idle polls: loops that each hold one long-poll on
// the tier, again from the answer's next_batch, until their context ends.
type tierPollers struct {
	url    string
	client *http.Client
	wg     sync.WaitGroup
	// firsts counts the polls whose first request has answered.
	firsts   atomic.Int64
	errors   atomic.Int64
	firstErr atomic.Pointer[string]
}

func newTierPollers(url string, polls int) *tierPollers {
	return &tierPollers{url: url, client: &http.Client{
		Timeout: syncClientTimeout,
		// One connection per poll, all kept between polls.
		Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConns: 0, MaxIdleConnsPerHost: polls + 16, IdleConnTimeout: 2 * time.Minute},
	}}
}

// start takes a token for each user with a sync through the tier and starts
// the polls, spread over the users. The first poll of each waits a part of
// the timeout, spread evenly, so that the polls' answers, and their
// request lines, come evenly over time, as a crowd's would, and not all
// in the same second.
func (p *tierPollers) start(ctx context.Context, tokens []string, polls int) error {
	since := make([]string, len(tokens))
	for i, token := range tokens {
		next, err := p.poll(ctx, token, "", 0)
		if err != nil {
			return fmt.Errorf("initial sync through the tier: %w", err)
		}
		since[i] = next
	}
	for i := range polls {
		u := i % len(tokens)
		first := time.Second + time.Duration(int64(tierTimeout-time.Second)*int64(i)/int64(polls))
		p.wg.Go(func() { p.loop(ctx, tokens[u], since[u], first) })
	}
	return nil
}

func (p *tierPollers) loop(ctx context.Context, token, since string, timeout time.Duration) {
	for first := true; ctx.Err() == nil; first = false {
		next, err := p.poll(ctx, token, since, timeout)
		if first {
			p.firsts.Add(1)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			p.errors.Add(1)
			msg := err.Error()
			p.firstErr.CompareAndSwap(nil, &msg)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		default:
			since, timeout = next, tierTimeout
		}
	}
}

// poll is one GET /sync on the tier; it returns the answer's next_batch.
func (p *tierPollers) poll(ctx context.Context, token, since string, timeout time.Duration) (string, error) {
	u := syncURL(p.url, since, timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", statusError(http.MethodGet, u, res.StatusCode, readSome(res.Body))
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: read the answer: %w", u, err)
	}
	a, err := parseSync(body)
	return a.NextBatch, err
}

// waiting asks the tier's health how many polls it holds.
func (p *tierPollers) waiting(ctx context.Context) (int, error) {
	res, err := probe(ctx, p.client, p.url+"/_cirrus/health", "")
	if err != nil {
		return 0, err
	}
	var h struct {
		Waiting *int `json:"waiting"`
	}
	if err := json.Unmarshal(res.body, &h); err != nil || res.status != http.StatusOK || h.Waiting == nil {
		return 0, fmt.Errorf("GET /_cirrus/health: status %d, %q", res.status, res.body)
	}
	return *h.Waiting, nil
}

// awaitWaiting waits until the tier holds polls polls. A poll answered is
// out of the count for the moment it takes to send the next, so after a
// while 99% will do.
func (p *tierPollers) awaitWaiting(ctx context.Context, polls int) error {
	start := time.Now()
	for {
		n, err := p.waiting(ctx)
		if err != nil {
			return err
		}
		if n >= polls || (time.Since(start) > 30*time.Second && n >= polls*99/100) {
			return nil
		}
		if time.Since(start) > tierRampBound {
			return fmt.Errorf("the tier held %d of the %d polls after %s (%d poll errors)", n, polls, tierRampBound, p.errors.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// awaitFirsts waits until every poll's first request has answered: from
// then on every request the tier holds is a full one, and they end evenly
// over the timeout.
func (p *tierPollers) awaitFirsts(ctx context.Context, polls int) error {
	bound := time.Now().Add(tierTimeout + time.Minute)
	for p.firsts.Load() < int64(polls) {
		if time.Now().After(bound) {
			return fmt.Errorf("%d of the %d polls' first requests answered within %s", p.firsts.Load(), polls, tierTimeout+time.Minute)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// procSample is what the bench reads of a process in /proc.
type procSample struct {
	RSS, HWM int64 // bytes
	CPUTicks int64 // utime+stime, in clockTicks
}

func readProc(pid int) (procSample, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procSample{}, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procSample{}, err
	}
	var s procSample
	if s.RSS, err = parseStatusKB(status, "VmRSS"); err != nil {
		return s, err
	}
	if s.HWM, err = parseStatusKB(status, "VmHWM"); err != nil {
		return s, err
	}
	s.CPUTicks, err = parseStatCPU(stat)
	return s, err
}

// parseStatusKB finds "<field>:  1234 kB" in the text of /proc/<pid>/status
// and returns it in bytes.
func parseStatusKB(status []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", field, sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		return kb * 1024, err
	}
	return 0, fmt.Errorf("no %s in status", field)
}

// parseStatCPU reads utime+stime (fields 14 and 15) from /proc/<pid>/stat.
// The command name, field 2, is in parentheses and may hold spaces and
// parentheses itself, so the fields are counted from its last ')'.
func parseStatCPU(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return utime + stime, nil
}

// cpuPercent is the CPU time of ticks over elapsed, in % of one core.
func cpuPercent(ticks int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(ticks) / clockTicks / elapsed.Seconds() * 100
}

// tierUsage sums the tier's log lines so far: its sync requests (how many,
// their DynamoDB usage and how long they were held) and its queue jobs.
type tierUsage struct {
	Lines  int
	Sum    usage
	PollMS float64
	Jobs   int
}

func usageOf(l *requestLog) tierUsage {
	l.refresh()
	l.mu.Lock()
	defer l.mu.Unlock()
	var u tierUsage
	for _, e := range l.byID {
		if !strings.HasSuffix(e.Route, "/sync") {
			continue
		}
		u.Lines++
		u.Sum = u.Sum.plus(e.DynamoDB)
		u.PollMS += e.DurationMS
	}
	for _, e := range l.jobs {
		if e.Kind == cirrussync.NewsKind {
			u.Jobs++
		}
		u.Sum = u.Sum.plus(e.DynamoDB)
	}
	return u
}

func (u usage) plus(o usage) usage {
	return usage{Calls: u.Calls + o.Calls, RCU: u.RCU + o.RCU, WCU: u.WCU + o.WCU}
}

func (u usage) scale(f float64) usage {
	return usage{Calls: u.Calls * f, RCU: u.RCU * f, WCU: u.WCU * f}
}

// minus is what was added from before to u.
func (u tierUsage) minus(before tierUsage) tierUsage {
	return tierUsage{
		Lines: u.Lines - before.Lines, Sum: u.Sum.plus(before.Sum.scale(-1)),
		PollMS: u.PollMS - before.PollMS, Jobs: u.Jobs - before.Jobs,
	}
}

// measureWindow samples the tier while its polls are idle for window.
func measureWindow(ctx context.Context, tier *server, pollers *tierPollers, window time.Duration, rep *tierReport) error {
	pid := tier.cmd.Process.Pid
	start, err := readProc(pid)
	if err != nil {
		return err
	}
	used := usageOf(tier.Log)
	t0 := time.Now()
	rep.RSSMaxBytes, rep.WaitingMin = start.RSS, rep.Polls
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for end := t0.Add(window); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if s, err := readProc(pid); err == nil {
			rep.RSSMaxBytes = max(rep.RSSMaxBytes, s.RSS)
		}
		if n, err := pollers.waiting(ctx); err == nil {
			rep.WaitingMin, rep.WaitingMax = min(rep.WaitingMin, n), max(rep.WaitingMax, n)
		}
	}
	end, err := readProc(pid)
	if err != nil {
		return err
	}
	elapsed := time.Since(t0)
	rep.RSSBytes, rep.HWMBytes = end.RSS, end.HWM
	rep.RSSMaxBytes = max(rep.RSSMaxBytes, end.RSS)
	rep.CPUPercent = cpuPercent(end.CPUTicks-start.CPUTicks, elapsed)
	rep.fill(usageOf(tier.Log).minus(used), elapsed)
	return nil
}

// fill works out the window's DynamoDB figures: per minute of the window,
// and per poll-minute, over the time the requests of the lines were held
// (exact whatever the answers' spread), and the cost of a client holding a
// long-poll for an hour.
func (rep *tierReport) fill(d tierUsage, elapsed time.Duration) {
	rep.Measured, rep.WindowSeconds = true, elapsed.Seconds()
	rep.Lines, rep.PollSeconds, rep.Usage = d.Lines, d.PollMS/1000, d.Sum
	if elapsed > 0 {
		rep.PerMinute = d.Sum.scale(1 / elapsed.Minutes())
	}
	if d.PollMS > 0 {
		rep.PerPollMinute = d.Sum.scale(60000 / d.PollMS)
	}
	h := &rep.ClientHour
	h.RCU, h.WCU = rep.PerPollMinute.RCU*60, rep.PerPollMinute.WCU*60
	h.DynamoDBDollars = (h.RCU*dollarsPerMillionRRU + h.WCU*dollarsPerMillionWRU) / 1e6
	h.TaskDollars = taskDollarsPerHour / float64(max(1, rep.Polls))
	h.LambdaDollars = lambdaDollarsPerClientHour
}

// measureTierWakeUps times n wake-ups of the watcher's sync waiting in the
// tier, the message sent through the writer at a random point of a second,
// and counts the news messages the tier took from the queue meanwhile.
func measureTierWakeUps(ctx context.Context, tier, watcher *server, n int, queue bool) tierWakeUp {
	var w tierWakeUp
	jobs := usageOf(tier.Log).Jobs
	var took []time.Duration
	for range n {
		_, d, err := runWakeUp(ctx, watcher, tierPollWithout)
		if err != nil {
			w.Failed = err.Error()
			break
		}
		took = append(took, d)
	}
	// The job line comes just after the news is handled.
	time.Sleep(200 * time.Millisecond)
	w.Samples, w.Early = len(took), watcher.sync.early
	w.P50MS, w.P99MS = ms(percentile(took, 0.5)), ms(percentile(took, 0.99))
	w.NewsMessages = usageOf(tier.Log).Jobs - jobs
	w.ThroughQueue = queue && w.Samples > 0 && w.NewsMessages >= w.Samples
	return w
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// printTier writes the tier workload's section.
func printTier(w io.Writer, r *report) {
	t := r.Tier
	if t == nil {
		return
	}
	how := "woken through the news queue (fauxqs, SQS)"
	if !t.NewsQueue {
		how = "WITHOUT the news queue (" + t.NoQueue + ")"
	}
	fmt.Fprintf(w, "\nsync tier (issue 18): %d idle long-polls (%d users, up to %d each, GET /sync?since=…&timeout=%.0f) held by one cirrus sync-tier process, %s, its stream poll every %.0f ms; the writer is a cirrus serve on the same DynamoDB (embedded, in the bench)\n",
		t.Polls, t.Users, tierUserPolls, t.TimeoutMS, how, t.PollIntervalMS)
	if t.Failed != "" {
		fmt.Fprintf(w, "  FAILED: %s\n", t.Failed)
	}
	if t.Measured {
		fmt.Fprintf(w, "  all were waiting %.1f s after the first; each poll's first request waited a part of the timeout, spread evenly, and the window of %.0f s began once all had answered, so that it holds full polls ending evenly; the tier's health counted %d to %d waiting in it\n",
			t.RampSeconds, t.WindowSeconds, t.WaitingMin, t.WaitingMax)
		perPoll := 0.0
		if t.Polls > 0 {
			perPoll = float64(t.RSSBytes-t.RSSBeforeBytes) / float64(t.Polls) / 1024
		}
		fmt.Fprintf(w, "  memory: VmRSS %.1f MiB at the end (%.1f MiB before the polls: %+.1f KiB per poll), at most %.1f MiB in the window; VmHWM %.1f MiB\n",
			mib(t.RSSBytes), mib(t.RSSBeforeBytes), perPoll, mib(t.RSSMaxBytes), mib(t.HWMBytes))
		fmt.Fprintf(w, "  CPU while idle: %.1f%% of one core (utime+stime over the window): %.0f%% of the Fargate task's %.2f vCPU, were its vCPU as fast as a core of this machine\n",
			t.CPUPercent, t.CPUPercent/taskVCPU, taskVCPU)
		rcuPerCall := 0.0
		if t.Usage.Calls > 0 {
			rcuPerCall = t.Usage.RCU / t.Usage.Calls
		}
		perRead, source := maxRCUPerIdlePoll, "the idle-sync goal"
		if r.Sync != nil && r.Sync.RCUPerPoll != nil {
			perRead, source = *r.Sync.RCUPerPoll, "the idle sync workload's figure"
		}
		fmt.Fprintf(w, "  DynamoDB: %d sync requests completed in the window, held %.0f poll-seconds: per minute %.1f calls, %.1f RCU, %.2f WCU; per poll-minute %.2f calls, %.3f RCU, %.4f WCU; %.2f RCU per call\n",
			t.Lines, t.PollSeconds, t.PerMinute.Calls, t.PerMinute.RCU, t.PerMinute.WCU,
			t.PerPollMinute.Calls, t.PerPollMinute.RCU, t.PerPollMinute.WCU, rcuPerCall)
		fmt.Fprintf(w, "    beside %s, %.2f RCU per poll read: one read every %.0f ms is %.2f RCU per poll-minute; the figures above hold every DynamoDB call of the requests (one every %.0f s per poll), not only their polls' stream reads\n",
			source, perRead, t.PollIntervalMS, perRead*60000/t.PollIntervalMS, t.TimeoutMS/1000)
		h := t.ClientHour
		fmt.Fprintf(w, "  per connected client-hour: %.1f RCU, %.2f WCU = $%.7f in DynamoDB on demand ($%.3f per million RRU, $%.3f per million WRU), plus the task's $%.4f/h (Fargate ARM 0.25 vCPU/0.5 GB and its IPv4) shared by %d polls = $%.7f; Lambda at 256 MB: $%.3f\n",
			h.RCU, h.WCU, h.DynamoDBDollars, dollarsPerMillionRRU, dollarsPerMillionWRU, taskDollarsPerHour, t.Polls, h.TaskDollars, h.LambdaDollars)
	}
	if t.PollErrors > 0 {
		fmt.Fprintf(w, "  %d polls failed, the first: %s\n", t.PollErrors, t.FirstPollError)
	}
	wu := t.WakeUp
	switch {
	case wu.Samples == 0 && wu.Failed == "" && t.Failed != "":
	case wu.Samples == 0:
		fmt.Fprintf(w, "  wake-up: FAILED: %s\n", wu.Failed)
	default:
		via := fmt.Sprintf("not through the queue (%d news messages reached the tier for %d sends): found by the tier's poll every %.0f ms", wu.NewsMessages, wu.Samples, t.PollIntervalMS)
		if wu.ThroughQueue {
			via = fmt.Sprintf("through the queue: %d news messages reached the tier for %d sends (its stream poll alone would take up to %.0f ms)", wu.NewsMessages, wu.Samples, t.PollIntervalMS)
		}
		fmt.Fprintf(w, "  wake-up, the writer in another process, while the polls are held: p50 %.1f ms, p99 %.1f ms over %d messages, from the send's answer to the waiting sync's answer holding it; %s\n",
			wu.P50MS, wu.P99MS, wu.Samples, via)
		if wu.Early > 0 {
			fmt.Fprintf(w, "  the waiting sync answered before the send did in %d wake-ups (counted as 0 ms)\n", wu.Early)
		}
		if wu.Failed != "" {
			fmt.Fprintf(w, "  wake-up stopped after %d: %s\n", wu.Samples, wu.Failed)
		}
	}
}
