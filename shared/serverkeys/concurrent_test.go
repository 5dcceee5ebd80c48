package serverkeys_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestKeys_ConcurrentColdCache: checks of a server's signature that start
// while its key is being fetched wait for that fetch and use its answer,
// rather than being turned away by the refetch guard as if the server had
// just been asked and had no such key: all verify, and the server is asked
// once.
func TestKeys_ConcurrentColdCache(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)

	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	verify := func(ctx context.Context, i int) {
		defer wg.Done()
		errs[i] = k.VerifyJSON(ctx, rm.Name, c.Now(), msg)
	}
	// The first check fetches the key; the remote holds its answer back
	// until the others have all found the table without it.
	rm.Hold.Lock()
	wg.Add(1)
	first := make(chan struct{})
	go func() { defer close(first); verify(ctx, 0) }()
	select {
	case <-rm.Arrived:
	case <-first:
		rm.Hold.Unlock()
		t.Fatalf("the first check ended without asking the remote: %v", errs[0])
	}
	start := make(chan struct{})
	meters := make([]*store.Meter, n)
	for i := 1; i < n; i++ {
		mctx, m := store.WithMeter(ctx)
		meters[i] = m
		wg.Add(1)
		go func() { <-start; verify(mctx, i) }()
	}
	close(start)
	for i := 1; i < n; i++ {
		for meters[i].Usage().Calls == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	rm.Hold.Unlock()
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("check %d of %d at once: %v", i, n, err)
		}
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("%d checks at once on a cold cache asked the remote %d times, want 1", n, got)
	}
	// A check sharing the fetch reads the key's item and no fetch mark; it
	// writes nothing (the fetching check stored the keys).
	for i := 1; i < n; i++ {
		u := meters[i].Usage()
		t.Logf("check %d sharing the fetch: %+v", i, u)
		if u.ReadUnits != 1 || u.Calls != 1 {
			t.Errorf("check %d sharing the fetch cost %+v, want one read of the key (1 call, 1 RCU)", i, u)
		}
	}
	// The fetch was stored once: another check reads the table, no fetch.
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil || rm.Fetches.Load() != 1 {
		t.Errorf("a check after them: %v, %d fetches, want nil and 1", err, rm.Fetches.Load())
	}
}

// TestKeys_ConcurrentLeaderGone: the check whose fetch others wait for
// goes away (its client disconnected); the fetch goes on, and the others
// verify with its answer.
func TestKeys_ConcurrentLeaderGone(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)

	rm.Hold.Lock()
	gone, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- k.VerifyJSON(gone, rm.Name, c.Now(), msg) }()
	select {
	case <-rm.Arrived:
	case err := <-first:
		rm.Hold.Unlock()
		t.Fatalf("the first check ended without asking the remote: %v", err)
	}
	mctx, meter := store.WithMeter(context.Background())
	second := make(chan error, 1)
	go func() { second <- k.VerifyJSON(mctx, rm.Name, c.Now(), msg) }()
	for meter.Usage().Calls == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	rm.Hold.Unlock()
	<-first
	if err := <-second; err != nil {
		t.Errorf("a check waiting for a fetch whose check went away: %v", err)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("the remote was asked %d times, want 1", got)
	}
}

// TestKeys_OtherInstanceFetching: a check on a second instance over the
// same table, needing a key the first instance is fetching, finds the
// fetch under way in its mark and waits for the first to store the key,
// rather than being refused a fetch: both verify, the server is asked
// once, and the waiting check writes nothing.
func TestKeys_OtherInstanceFetching(t *testing.T) {
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	k1, _ := newKeys(t, st, c, "example.org")
	k2, _ := newKeys(t, st, c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)

	rm.Hold.Lock()
	first := make(chan error, 1)
	go func() { first <- k1.VerifyJSON(context.Background(), rm.Name, c.Now(), msg) }()
	select {
	case <-rm.Arrived:
	case err := <-first:
		rm.Hold.Unlock()
		t.Fatalf("the first instance's check ended without asking the remote: %v", err)
	}
	mctx, meter := store.WithMeter(context.Background())
	second := make(chan error, 1)
	go func() { second <- k2.VerifyJSON(mctx, rm.Name, c.Now(), msg) }()
	awaitPolling(t, rm, meter, second)
	rm.Hold.Unlock()
	if err := <-first; err != nil {
		t.Errorf("the fetching instance: %v", err)
	}
	if err := <-second; err != nil {
		t.Errorf("the instance waiting for the other's fetch: %v", err)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("the remote was asked %d times, want 1", got)
	}
	u := meter.Usage()
	t.Logf("check waiting for another instance's fetch: %+v", u)
	if u.WriteUnits != 0 {
		t.Errorf("the waiting check wrote %+v, want nothing", u)
	}
}

// TestKeys_OtherInstanceFetchedNoSuchKey: the fetch the second instance
// waits for ends without the key asked for (the server does not publish
// it); its mark, marked done, ends the wait, with a fetch deadline of an
// hour that would otherwise hold it: both fail as signatures that do not
// verify, and the server is asked once.
func TestKeys_OtherInstanceFetchedNoSuchKey(t *testing.T) {
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	instance := func() *serverkeys.Keys {
		k, err := serverkeys.New(serverkeys.Options{Store: st, ServerName: "example.org", Key: mustKey(t), Client: client(), Now: c.Now, FetchTimeout: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k1, k2 := instance(), instance()
	msg := signed(t, rm.Name, mustKey(t), `{"hello":"world"}`)

	rm.Hold.Lock()
	first := make(chan error, 1)
	go func() { first <- k1.VerifyJSON(context.Background(), rm.Name, c.Now(), msg) }()
	select {
	case <-rm.Arrived:
	case err := <-first:
		rm.Hold.Unlock()
		t.Fatalf("the first instance's check ended without asking the remote: %v", err)
	}
	mctx, meter := store.WithMeter(context.Background())
	second := make(chan error, 1)
	go func() { second <- k2.VerifyJSON(mctx, rm.Name, c.Now(), msg) }()
	awaitPolling(t, rm, meter, second)
	rm.Hold.Unlock()
	for i, err := range []error{<-first, <-second} {
		if !errors.Is(err, serverkeys.ErrSignature) {
			t.Errorf("instance %d: %v, want %v", i+1, err, serverkeys.ErrSignature)
		}
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("the remote was asked %d times, want 1", got)
	}
	// Within the minute, a third instance is refused a fetch by the mark,
	// done now: it reads the key and the mark, and neither fetches nor
	// waits.
	mctx, meter = store.WithMeter(context.Background())
	if err := instance().VerifyJSON(mctx, rm.Name, c.Now(), msg); !errors.Is(err, serverkeys.ErrSignature) {
		t.Errorf("a third instance within the minute: %v, want %v", err, serverkeys.ErrSignature)
	}
	if u := meter.Usage(); u.Calls != 2 || u.WriteUnits != 0 || rm.Fetches.Load() != 1 {
		t.Errorf("a third instance within the minute: %+v and %d fetches, want 2 reads and 1 fetch", u, rm.Fetches.Load())
	}
}

// awaitPolling returns once the check metered by meter, whose error comes
// on done, has read the table three times: the key, the fetch mark, then
// a first poll of both while rm holds its answer. It fails the test if
// the check ends first: refused a fetch rather than waiting for it.
func awaitPolling(t *testing.T, rm *remote, meter *store.Meter, done <-chan error) {
	t.Helper()
	for meter.Usage().Calls < 3 {
		select {
		case err := <-done:
			rm.Hold.Unlock()
			t.Fatalf("the second instance's check ended while the first fetched: %v", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
}

// TestKeys_FetchingInstanceGone: the instance that marked a server as
// being fetched went away before marking the fetch done. Another
// instance's check waits for it at most until the earlier of that fetch's
// deadline and its own, then fails as a key it could not get, without
// fetching (the mark still guards the minute).
func TestKeys_FetchingInstanceGone(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)
	k, err := serverkeys.New(serverkeys.Options{Store: st, ServerName: "example.org", Key: mustKey(t), Client: client(), Now: c.Now, FetchTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		deadline time.Time
		polls    bool
	}{
		{"its deadline passed", time.Now().Add(-time.Second), false},
		{"its deadline to come", time.Now().Add(time.Hour), true},
	} {
		if err := serverkeys.PutDirectFetchMark(ctx, st, rm.Name, c.Now(), tc.deadline); err != nil {
			t.Fatal(err)
		}
		mctx, meter := store.WithMeter(ctx)
		if err := k.VerifyJSON(mctx, rm.Name, c.Now(), msg); !errors.Is(err, serverkeys.ErrSignature) {
			t.Errorf("%s: %v, want %v", tc.name, err, serverkeys.ErrSignature)
		}
		u := meter.Usage()
		t.Logf("%s: %+v", tc.name, u)
		if polled := u.Calls > 2; polled != tc.polls || u.WriteUnits != 0 {
			t.Errorf("%s: %+v, want the key and the mark read, polled %v, nothing written", tc.name, u, tc.polls)
		}
	}
	if got := rm.Fetches.Load(); got != 0 {
		t.Errorf("the remote was asked %d times, want 0", got)
	}
}

// TestNotary_OtherInstanceFetching: a key query on a second instance,
// asking for any key of a server the first instance is fetching, waits
// for that fetch to be marked done, then answers with what it stored: the
// server is asked once.
func TestNotary_OtherInstanceFetching(t *testing.T) {
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	k1, _ := newKeys(t, st, c, "example.org")
	k2, key2 := newKeys(t, st, c, "second.example")
	rt := httpapi.NewRouter()
	k2.Register(rt)
	meters := make(chan *store.Meter, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, m := store.WithMeter(r.Context())
		meters <- m
		rt.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(srv.Close)
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)

	rm.Hold.Lock()
	first := make(chan error, 1)
	go func() { first <- k1.VerifyJSON(context.Background(), rm.Name, c.Now(), msg) }()
	select {
	case <-rm.Arrived:
	case err := <-first:
		rm.Hold.Unlock()
		t.Fatalf("the first instance's check ended without asking the remote: %v", err)
	}
	type answer struct {
		status int
		body   []byte
		err    error
	}
	second := make(chan answer, 1)
	go func() {
		res, err := http.Get(srv.URL + "/_matrix/key/v2/query/" + rm.Name)
		if err != nil {
			second <- answer{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		second <- answer{res.StatusCode, body, err}
	}()
	meter := <-meters
	for meter.Usage().Calls < 3 {
		select {
		case a := <-second:
			rm.Hold.Unlock()
			t.Fatalf("the second instance answered while the first fetched: %d %s %v", a.status, a.body, a.err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	rm.Hold.Unlock()
	if err := <-first; err != nil {
		t.Errorf("the fetching instance: %v", err)
	}
	a := <-second
	var body map[string]any
	if a.err != nil || a.status != http.StatusOK || json.Unmarshal(a.body, &body) != nil {
		t.Fatalf("the second instance's query: %d %s %v", a.status, a.body, a.err)
	}
	if docs := serverKeys(t, &notary{Name: "second.example", Key: key2}, body, rm.Key); len(docs) != 1 {
		t.Errorf("the second instance's query: %d documents, want the one the first fetched", len(docs))
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("the remote was asked %d times, want 1", got)
	}
	t.Logf("query waiting for another instance's fetch: %+v", meter.Usage())
}
