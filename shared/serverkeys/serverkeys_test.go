package serverkeys_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// clock is a settable time: tests move it rather than sleep.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Millisecond)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// remote is a fake homeserver over TLS on loopback that serves
// /_matrix/key/v2/server signed with its key, valid for Validity past the
// clock, and counts the requests.
type remote struct {
	Name     string
	Key      keys.Key
	Old      map[string]oldKey // key ID to old key
	Validity time.Duration
	Fetches  atomic.Int64
	// Hold, while locked, keeps the answers back; each request sends on
	// Arrived (when there is room) before it waits.
	Hold    sync.RWMutex
	Arrived chan struct{}
	clock   *clock
	srv     *httptest.Server
	mu      sync.Mutex
}

type oldKey struct {
	Key     keys.Key
	Expired time.Time
}

func newRemote(t *testing.T, c *clock) *remote {
	t.Helper()
	rm := &remote{Key: mustKey(t), Validity: time.Hour, clock: c, Old: map[string]oldKey{}, Arrived: make(chan struct{}, 1)}
	rm.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/server" {
			http.NotFound(w, r)
			return
		}
		rm.Fetches.Add(1)
		select {
		case rm.Arrived <- struct{}{}:
		default:
		}
		rm.Hold.RLock()
		rm.Hold.RUnlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(rm.Doc(t))
	}))
	t.Cleanup(rm.srv.Close)
	rm.Name = rm.srv.Listener.Addr().String()
	return rm
}

// Doc is the remote's signed key document now.
func (rm *remote) Doc(t *testing.T) []byte {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	old := map[string]any{}
	for id, o := range rm.Old {
		old[id] = map[string]any{"key": b64(o.Key), "expired_ts": o.Expired.UnixMilli()}
	}
	doc, _ := json.Marshal(map[string]any{
		"server_name":     rm.Name,
		"valid_until_ts":  rm.clock.Now().Add(rm.Validity).UnixMilli(),
		"verify_keys":     map[string]any{rm.Key.ID: map[string]string{"key": b64(rm.Key)}},
		"old_verify_keys": old,
	})
	signed, err := protocol.SignJSON(rm.Name, rm.Key.ID, rm.Key.Private, doc)
	if err != nil {
		t.Error(err)
	}
	return signed
}

// Rotate makes the current key old, expired at the clock's now, and a new
// one current.
func (rm *remote) Rotate(t *testing.T) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	rm.Old[rm.Key.ID] = oldKey{Key: rm.Key, Expired: rm.clock.Now()}
	rm.Key = mustKey(t)
}

func b64(k keys.Key) string { return base64.RawStdEncoding.EncodeToString(k.Public()) }

func mustKey(t *testing.T) keys.Key {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openStore starts an embedded DynamoDB and a fresh table on it.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := store.Open(context.Background(), store.Options{Table: "test", Endpoint: db.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// client reaches the fake servers: their names are loopback host:port
// literals, their certificates self-signed.
func client() serverkeys.Client {
	return fclient.NewClient(fclient.WithSkipVerify(true), fclient.WithTimeout(10*time.Second))
}

// newKeys builds a Keys named name on st.
func newKeys(t *testing.T, st *store.Store, c *clock, name string, trusted ...config.TrustedKeyServer) (*serverkeys.Keys, keys.Key) {
	t.Helper()
	key := mustKey(t)
	k, err := serverkeys.New(serverkeys.Options{Store: st, ServerName: name, Key: key, Client: client(), Trusted: trusted, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return k, key
}

// signed is a small JSON object signed by k as server.
func signed(t *testing.T, server string, k keys.Key, body string) []byte {
	t.Helper()
	doc, err := protocol.SignJSON(server, k.ID, k.Private, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestKeys_FetchedOnceThenFromTable(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	k, _ := newKeys(t, st, c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"hello":"world"}`)

	fctx, fmeter := store.WithMeter(ctx)
	if err := k.VerifyJSON(fctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatalf("first verify: %v", err)
	}
	t.Logf("verify fetching the key: %+v", fmeter.Usage())
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatalf("second verify: %v", err)
	}
	// Another instance on the same table, as another Lambda: nothing in memory.
	other, _ := newKeys(t, st, c, "example.org")
	mctx, meter := store.WithMeter(ctx)
	if err := other.VerifyJSON(mctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatalf("verify from another instance: %v", err)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Errorf("remote asked %d times for its keys, want 1 (then the table)", got)
	}
	u := meter.Usage()
	t.Logf("verify from the table: %d calls, %.1f RCU, %.1f WCU", u.Calls, u.ReadUnits, u.WriteUnits)
	if u.Calls != 1 || u.WriteUnits != 0 {
		t.Errorf("verify from the table cost %+v, want one read call and no writes", u)
	}

	// A signature by another key under the same key ID is refused.
	forged := signed(t, rm.Name, keys.Key{ID: rm.Key.ID, Private: mustKey(t).Private}, `{"hello":"world"}`)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), forged); !errors.Is(err, serverkeys.ErrSignature) {
		t.Errorf("forged signature: got %v, want ErrSignature", err)
	}
	// So is a message signed by nobody.
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), []byte(`{"hello":"world"}`)); !errors.Is(err, serverkeys.ErrSignature) {
		t.Errorf("unsigned: got %v, want ErrSignature", err)
	}
}

func TestKeys_RefetchedAfterValidUntil(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	k, _ := newKeys(t, st, c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"a":1}`)

	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	c.Advance(30 * time.Minute)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Fatalf("within valid_until_ts: %d fetches, want 1", got)
	}
	c.Advance(time.Hour) // past valid_until_ts
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	if got := rm.Fetches.Load(); got != 2 {
		t.Fatalf("past valid_until_ts: %d fetches, want 2", got)
	}
	// Something signed before the old valid_until_ts needs no fetch.
	if err := k.VerifyJSON(ctx, rm.Name, c.Now().Add(-80*time.Minute), msg); err != nil {
		t.Fatal(err)
	}
	if got := rm.Fetches.Load(); got != 2 {
		t.Fatalf("an earlier time: %d fetches, want 2", got)
	}
}

func TestKeys_CachedAtMostSevenDays(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	rm.Validity = 30 * 24 * time.Hour
	k, _ := newKeys(t, st, c, "example.org")
	msg := signed(t, rm.Name, rm.Key, `{"a":1}`)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	c.Advance(6 * 24 * time.Hour)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	if got := rm.Fetches.Load(); got != 1 {
		t.Fatalf("after 6 days: %d fetches, want 1", got)
	}
	c.Advance(2 * 24 * time.Hour)
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); err != nil {
		t.Fatal(err)
	}
	if got := rm.Fetches.Load(); got != 2 {
		t.Fatalf("after 8 days of a 30-day key: %d fetches, want 2 (7 days at most)", got)
	}
}

func TestKeys_OldKeysForOldTimesOnly(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	st := openStore(t)
	rm := newRemote(t, c)
	old := rm.Key
	rm.Rotate(t)
	expired := c.Now()
	c.Advance(time.Minute)
	k, _ := newKeys(t, st, c, "example.org")
	msg := signed(t, rm.Name, old, `{"event":"old"}`)

	if err := k.VerifyJSON(ctx, rm.Name, expired.Add(-time.Hour), msg); err != nil {
		t.Fatalf("old key, before its expired_ts: %v", err)
	}
	if err := k.VerifyJSON(ctx, rm.Name, expired.Add(time.Second), msg); !errors.Is(err, serverkeys.ErrSignature) {
		t.Fatalf("old key, after its expired_ts: got %v, want ErrSignature", err)
	}
	if err := k.VerifyJSON(ctx, rm.Name, c.Now(), msg); !errors.Is(err, serverkeys.ErrSignature) {
		t.Fatalf("old key, now: got %v, want ErrSignature", err)
	}
	// From the table on another instance, the same answers.
	other, _ := newKeys(t, st, c, "example.org")
	fetches := rm.Fetches.Load()
	if err := other.VerifyJSON(ctx, rm.Name, expired.Add(-time.Hour), msg); err != nil {
		t.Fatalf("old key from the table, before its expired_ts: %v", err)
	}
	if err := other.VerifyJSON(ctx, rm.Name, expired.Add(time.Second), msg); !errors.Is(err, serverkeys.ErrSignature) {
		t.Fatalf("old key from the table, after its expired_ts: got %v, want ErrSignature", err)
	}
	if got := rm.Fetches.Load(); got != fetches {
		t.Errorf("old key: %d fetches after it was stored, want none", got-fetches)
	}
	// The new key verifies now.
	if err := other.VerifyJSON(ctx, rm.Name, c.Now(), signed(t, rm.Name, rm.Key, `{"event":"new"}`)); err != nil {
		t.Errorf("current key: %v", err)
	}
}

func TestKeys_UnreachableServer(t *testing.T) {
	c := newClock()
	st := openStore(t)
	k, _ := newKeys(t, st, c, "example.org")
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := l.Addr().String()
	l.Close()
	msg := signed(t, name, mustKey(t), `{}`)
	if err := k.VerifyJSON(context.Background(), name, c.Now(), msg); !errors.Is(err, serverkeys.ErrSignature) {
		t.Fatalf("unreachable server: got %v, want ErrSignature", err)
	}
}

// serve runs handler as a federation listener over TLS on loopback and
// returns its server name (its address).
func serve(t *testing.T, register func(*httpapi.Router)) string {
	t.Helper()
	rt := httpapi.NewRouter()
	register(rt)
	srv := httptest.NewTLSServer(rt)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestKeys_FetchTimeout: a server that never answers is given up on at
// FetchTimeout, not at the fetchers' own 15 s twice.
func TestKeys_FetchTimeout(t *testing.T) {
	c := newClock()
	gaveUp := make(chan bool, 4)
	tarpit := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			gaveUp <- true
		case <-time.After(time.Minute):
			gaveUp <- false
		}
	}))
	t.Cleanup(tarpit.Close)
	name := tarpit.Listener.Addr().String()
	k, err := serverkeys.New(serverkeys.Options{Store: openStore(t), ServerName: "example.org", Key: mustKey(t),
		Client: client(), Now: c.Now, FetchTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = k.VerifyJSON(context.Background(), name, c.Now(), signed(t, name, mustKey(t), `{}`))
	if !errors.Is(err, serverkeys.ErrSignature) {
		t.Fatalf("a server that never answers: got %v, want ErrSignature", err)
	}
	if !<-gaveUp {
		t.Fatal("the fetch waited for the server's answer instead of giving up at FetchTimeout")
	}
}
