// Package serverkeys knows other servers' signing keys: it fetches them
// (from the server itself, then from the notaries of trusted_key_servers),
// caches them in the table until they expire, verifies JSON and X-Matrix
// request signatures with them, and answers /_matrix/key/v2/query as a
// notary for others.
//
// The cache is a gomatrixserverlib KeyDatabase, so the library's KeyRing,
// fetchers and event signature checks run over it unchanged.
package serverkeys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// MaxCache is the longest a fetched key is trusted without asking again,
// whatever valid_until_ts its server gave: the spec's rule for room
// versions 5 and later ("the lesser of valid_until_ts and 7 days into the
// future"), which Synapse applies to every key it caches.
const MaxCache = 7 * 24 * time.Hour

// ErrSignature is a signature that does not verify: missing, forged, made
// with a key the server does not publish, or with a key not valid at the
// time asked about.
var ErrSignature = errors.New("signature does not verify")

// Client fetches keys from other servers, directly (/_matrix/key/v2/server)
// and through notaries (/_matrix/key/v2/query). gomatrixserverlib's
// *fclient.Client is one; the outbound federation client can be another.
type Client = gomatrixserverlib.KeyClient

// Options build a Keys.
type Options struct {
	Store *store.Store
	// ServerName and Key are this server's own: its keys are never fetched,
	// and its notary answers are signed with Key.
	ServerName string
	Key        keys.Key
	// Client fetches other servers' keys.
	Client Client
	// Trusted are the notaries asked when a server does not answer for
	// itself (trusted_key_servers); none by default.
	Trusted []config.TrustedKeyServer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// FetchTimeout bounds the fetches of one signature check or key query,
	// all fetchers together; DefaultFetchTimeout when 0.
	FetchTimeout time.Duration
}

// Keys verifies signatures of other servers with keys it caches in the
// table. It is safe for concurrent use.
type Keys struct {
	ring       gomatrixserverlib.KeyRing
	db         *Database
	serverName string
	key        keys.Key
	now        func() time.Time
	timeout    time.Duration
}

// New builds a Keys: a KeyRing over the table, with a direct fetcher first
// and a perspective fetcher per trusted notary after it.
func New(o Options) (*Keys, error) {
	if o.Store == nil || o.Client == nil || o.ServerName == "" || o.Key.Private == nil {
		return nil, errors.New("server keys: store, client, server name and key are required")
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	db := &Database{Store: o.Store, Now: now}
	client := recorder{Client: o.Client, db: db}
	fl := &flights{}
	fetchers := []gomatrixserverlib.KeyFetcher{guarded{&gomatrixserverlib.DirectKeyFetcher{
		Client:            client,
		IsLocalServerName: func(s spec.ServerName) bool { return string(s) == o.ServerName },
		LocalPublicKey:    spec.Base64Bytes(o.Key.Public()),
	}, db, o.ServerName, fl}}
	for _, t := range o.Trusted {
		verify := map[gomatrixserverlib.KeyID]ed25519.PublicKey{}
		for id, b64 := range t.VerifyKeys {
			pub, err := config.DecodeVerifyKey(b64)
			if err != nil {
				return nil, fmt.Errorf("server keys: trusted_key_servers %s %s: %w", t.ServerName, id, err)
			}
			verify[gomatrixserverlib.KeyID(id)] = pub
		}
		fetchers = append(fetchers, guarded{&gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: spec.ServerName(t.ServerName),
			PerspectiveServerKeys: verify,
			Client:                client,
		}, db, o.ServerName, fl})
	}
	return &Keys{
		ring:       gomatrixserverlib.KeyRing{KeyFetchers: fetchers, KeyDatabase: db},
		db:         db,
		serverName: o.ServerName,
		key:        o.Key,
		now:        now,
		timeout:    o.FetchTimeout,
	}, nil
}

// Ring is the KeyRing, for gomatrixserverlib's own checks (event
// signatures, joins).
func (k *Keys) Ring() *gomatrixserverlib.KeyRing { return &k.ring }

// VerifyJSON checks that message carries a valid signature of serverName
// by a key valid at the time given. A signature that does not verify is
// ErrSignature; any other error is the table's or the network's.
func (k *Keys) VerifyJSON(ctx context.Context, serverName string, at time.Time, message []byte) error {
	res, err := k.ring.VerifyJSONs(k.withFetchDeadline(ctx), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName:           spec.ServerName(serverName),
		AtTS:                 spec.AsTimestamp(at),
		Message:              message,
		ValidityCheckingFunc: k.validAt,
	}})
	if err != nil {
		return fmt.Errorf("verify signature of %s: %w", serverName, err)
	}
	if res[0].Error != nil {
		return fmt.Errorf("%w: %s", ErrSignature, strings.TrimPrefix(res[0].Error.Error(), "gomatrixserverlib: "))
	}
	return nil
}

// validAt reports whether a key valid until validUntil may verify a
// signature made at atTS: never past MaxCache from now, as the spec asks,
// on this Keys' clock rather than the library's.
func (k *Keys) validAt(atTS, validUntil spec.Timestamp) bool {
	if validUntil == gomatrixserverlib.PublicKeyNotValid {
		return false
	}
	limit := spec.AsTimestamp(k.now().Add(MaxCache))
	return atTS <= min(validUntil, limit)
}

// keyPrefix starts the partition of one server's keys.
const keyPrefix = "serverkeys|"

// keyItem is one key of another server, one item per (server, key ID), so
// that a signature check reads exactly the key it names and a notary query
// reads the server's partition.
type keyItem struct {
	PK string `dynamodbav:"pk"` // serverkeys|<server name>
	SK string `dynamodbav:"sk"` // key ID, such as ed25519:abc
	// Key is the public key, unpadded base64.
	Key string `dynamodbav:"key"`
	// ValidUntil is the server's valid_until_ts, held to MaxCache past the
	// fetch; 0 for an old key.
	ValidUntil int64 `dynamodbav:"valid_until_ts"`
	// ExpiredTS is an old key's expired_ts: it verifies only what was signed
	// before then. 0 for a current key.
	ExpiredTS int64 `dynamodbav:"expired_ts,omitempty"`
	// FetchedTS is when the key was fetched, in milliseconds.
	FetchedTS int64 `dynamodbav:"fetched_ts"`
	// Doc is the signed key document the key came in, as received, which
	// the notary API hands on.
	Doc string `dynamodbav:"doc"`
}

func itemKey(server spec.ServerName, keyID gomatrixserverlib.KeyID) store.Key {
	return store.Key{PK: keyPrefix + string(server), SK: string(keyID)}
}

// result is the item as the KeyRing sees it.
func (it keyItem) result() (gomatrixserverlib.PublicKeyLookupResult, bool) {
	pub, err := base64.RawStdEncoding.DecodeString(it.Key)
	if err != nil {
		return gomatrixserverlib.PublicKeyLookupResult{}, false
	}
	return gomatrixserverlib.PublicKeyLookupResult{
		VerifyKey:    gomatrixserverlib.VerifyKey{Key: pub},
		ValidUntilTS: spec.Timestamp(it.ValidUntil),
		ExpiredTS:    spec.Timestamp(it.ExpiredTS),
	}, true
}

// Database is the table-backed gomatrixserverlib.KeyDatabase: other
// servers' keys, one item each, kept as long as they verify something (a
// current key until its valid_until_ts, an old key for events before its
// expired_ts).
type Database struct {
	Store *store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// seen holds the signed documents the fetchers received, until
	// StoreKeys learns which of their keys the KeyRing accepted. Only a
	// way to hand documents from the fetchers to the store: what it loses
	// is fetched again.
	mu   sync.Mutex
	seen map[seenKey][]byte
}

var _ gomatrixserverlib.KeyDatabase = (*Database)(nil)

// seenKey is a key exactly as a fetcher reports it.
type seenKey struct {
	server, keyID, key    string
	validUntil, expiredTS spec.Timestamp
}

// maxSeen bounds the documents held for StoreKeys; past it, the oldest
// are dropped wholesale (documents whose keys a fetcher refused).
const maxSeen = 1024

// maxDoc is the largest key document stored; a larger one (only a hostile
// server sends one) is used but not cached.
const maxDoc = 64 << 10

func (db *Database) now() time.Time {
	if db.Now != nil {
		return db.Now()
	}
	return time.Now()
}

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (db *Database) FetcherName() string { return "table" }

// FetchKeys returns the stored keys asked for: old keys always (the
// KeyRing checks their expiry against the signature's time), current keys
// only while valid at the time asked for, so that a stale one is fetched
// again. One BatchGetItem of the keys asked for.
func (db *Database) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	var ks []store.Key
	for req := range requests {
		if req.KeyID != "" && req.ServerName != "" {
			ks = append(ks, itemKey(req.ServerName, req.KeyID))
		}
	}
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	if len(ks) == 0 {
		return out, nil
	}
	err := db.Store.GetMany(ctx, ks, func(k store.Key, decode func(any) error) error {
		return readKey(k, decode, requests, out)
	})
	if err != nil {
		return nil, fmt.Errorf("server keys: %w", err)
	}
	return out, nil
}

// readKey decodes the key item at k into out if it answers requests: an
// old key always, a current one while valid at the time asked for.
func readKey(k store.Key, decode func(any) error, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, out map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	var it keyItem
	if err := decode(&it); err != nil {
		return err
	}
	req := gomatrixserverlib.PublicKeyLookupRequest{
		ServerName: spec.ServerName(strings.TrimPrefix(k.PK, keyPrefix)),
		KeyID:      gomatrixserverlib.KeyID(k.SK),
	}
	res, ok := it.result()
	if !ok || (it.ExpiredTS == 0 && spec.Timestamp(it.ValidUntil) < requests[req]) {
		return nil
	}
	out[req] = res
	return nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase: it writes the keys
// this Database's fetchers just received, with the document each came in,
// and a current key's validity held to MaxCache from now. Keys that came
// from the table itself (the KeyRing hands them back) are not written
// again, so a cached key's validity never grows by being read.
func (db *Database) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	now := db.now()
	limit := spec.AsTimestamp(now.Add(MaxCache))
	var items []any
	for req, res := range results {
		doc := db.take(req, res)
		if doc == nil {
			continue
		}
		it := keyItem{
			PK: keyPrefix + string(req.ServerName), SK: string(req.KeyID),
			Key:       base64.RawStdEncoding.EncodeToString(res.Key),
			ExpiredTS: int64(res.ExpiredTS),
			FetchedTS: now.UnixMilli(),
			Doc:       string(doc),
		}
		if res.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired {
			it.ValidUntil = int64(min(res.ValidUntilTS, limit))
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil
	}
	if err := db.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("server keys: %w", err)
	}
	return nil
}

// remember holds a document a fetcher received, under each key in it as
// the fetchers will report the key, if it is signed by its own keys.
func (db *Database) remember(server spec.ServerName, sk gomatrixserverlib.ServerKeys) {
	if len(sk.Raw) > maxDoc {
		return
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Unix(0, 0), sk); !checks.AllChecksOK {
		return
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.seen == nil || len(db.seen) > maxSeen {
		db.seen = map[seenKey][]byte{}
	}
	for id, k := range sk.VerifyKeys {
		db.seen[seenKey{string(server), string(id), k.Key.Encode(), sk.ValidUntilTS, 0}] = sk.Raw
	}
	for id, k := range sk.OldVerifyKeys {
		db.seen[seenKey{string(server), string(id), k.Key.Encode(), 0, k.ExpiredTS}] = sk.Raw
	}
}

// take returns and forgets the document a fetched key came in; nil for a
// key no fetcher received (read from the table, or this server's own).
func (db *Database) take(req gomatrixserverlib.PublicKeyLookupRequest, res gomatrixserverlib.PublicKeyLookupResult) []byte {
	k := seenKey{string(req.ServerName), string(req.KeyID), res.Key.Encode(), res.ValidUntilTS, res.ExpiredTS}
	db.mu.Lock()
	defer db.mu.Unlock()
	doc := db.seen[k]
	delete(db.seen, k)
	return doc
}

// recorder passes the documents its Client receives to the Database.
type recorder struct {
	Client
	db *Database
}

func (r recorder) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	sk, err := r.Client.GetServerKeys(ctx, server)
	if err == nil {
		r.db.remember(server, sk)
	}
	return sk, err
}

func (r recorder) LookupServerKeys(ctx context.Context, notary spec.ServerName, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) ([]gomatrixserverlib.ServerKeys, error) {
	list, err := r.Client.LookupServerKeys(ctx, notary, requests)
	for _, sk := range list {
		r.db.remember(sk.ServerName, sk)
	}
	return list, err
}

// DefaultFetchTimeout bounds the fetches of one signature check or key
// query, all fetchers together (the direct fetcher alone may take 15 s
// twice), so that the answer beats API Gateway's 30 s.
const DefaultFetchTimeout = 20 * time.Second

type deadlineKey struct{}

// withFetchDeadline sets, unless set, the time the fetches under ctx end:
// network time, not the clock of Now.
func (k *Keys) withFetchDeadline(ctx context.Context) context.Context {
	if _, ok := ctx.Value(deadlineKey{}).(time.Time); ok {
		return ctx
	}
	return context.WithValue(ctx, deadlineKey{}, time.Now().Add(k.timeout))
}

// MinRefetch is the least time between two fetches of one server's keys
// by one fetcher, across all instances: a signature naming a key its
// server does not publish, or a key query asking for one, must not make
// this server ask that server again and again (the key query needs no
// authentication, and any request can name any origin). A server that
// starts signing with a new key within a minute of the last fetch is
// believed up to a minute later, when its requests are sent again.
const MinRefetch = time.Minute

// guarded runs a fetcher for the servers it has not been run for within
// MinRefetch, until the deadline of withFetchDeadline, or for
// DefaultFetchTimeout without one (gomatrixserverlib's own checks): the
// table's reads and writes around it are not cut short. Checks of one
// process share its runs (flights): one that needs a server the fetcher
// is asking, or asked within MinRefetch, takes that run's answer. A check
// needing a server another instance is asking waits for that instance to
// store the answer (await).
type guarded struct {
	gomatrixserverlib.KeyFetcher
	db      *Database
	local   string
	flights *flights
}

// fetchMark records when a fetcher last asked for a server's keys, and
// whether that fetch is still under way.
type fetchMark struct {
	PK        string `dynamodbav:"pk"` // serverfetch|<server name>
	SK        string `dynamodbav:"sk"` // the fetcher's name
	FetchedTS int64  `dynamodbav:"fetched_ts"`
	// Until, while the fetch is under way, is its deadline in milliseconds
	// (network time, as the deadline itself); 0 once the fetch is done
	// and failed or lacked a key asked for (a fetch that brought the keys
	// asked for is seen done by its keys, and its mark is not written again).
	Until   int64 `dynamodbav:"fetch_until,omitempty"`
	Expires int64 `dynamodbav:"expires_at"`
}

// inFlight reports whether the fetch m marks may still be under way.
func (m fetchMark) inFlight() bool { return m.Until > time.Now().UnixMilli() }

func (g guarded) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	deadline, ok := ctx.Value(deadlineKey{}).(time.Time)
	if !ok {
		deadline = time.Now().Add(DefaultFetchTimeout)
	}
	own, mine, others := g.flights.join(g.FetcherName(), g.local, requests, g.db.now())
	var out map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
	if len(own) > 0 {
		var err error
		if out, err = g.fly(ctx, deadline, own, mine); err != nil {
			return nil, err
		}
	}
	if len(others) == 0 {
		return out, nil
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	shared, err := wait(wctx, others, requests)
	if out == nil {
		return shared, err
	}
	maps.Copy(out, shared)
	return out, err
}

// fly runs the fetcher for the requests this check fetches itself, those
// its guard lets through, as flight mine (when it holds other servers
// than the local one), stores their answer and marks the fetch done; then
// it waits for the servers another instance is fetching. Neither is cut
// short when ctx is cancelled, only at the deadline: other checks may be
// waiting for them.
func (g guarded) fly(ctx context.Context, deadline time.Time, own map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, mine *flight) (res map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, err error) {
	fetched := map[spec.ServerName]bool{}
	if mine != nil {
		defer func() { g.flights.land(mine, res, fetched, err == nil) }()
	}
	ctx = context.WithoutCancel(ctx)
	now := g.db.now()
	due, elsewhere, err := g.due(ctx, now, deadline, own)
	if err != nil {
		return nil, err
	}
	res = map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	if len(due) > 0 {
		for req := range due {
			fetched[req.ServerName] = true
		}
		if res, err = g.fetch(ctx, now, deadline, due); err != nil {
			return nil, err
		}
	}
	if len(elsewhere) == 0 {
		return res, nil
	}
	waiting := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for req, ts := range own {
		if _, ok := elsewhere[req.ServerName]; ok {
			waiting[req] = ts
		}
	}
	got, err := g.await(ctx, deadline, waiting, elsewhere)
	for req, r := range got {
		fetched[req.ServerName] = true
		res[req] = r
	}
	return res, err
}

// fetch runs the fetcher until the deadline and stores what it returned
// (the KeyRing's StoreKeys then finds nothing left to write): one
// BatchWriteItem. Checks on other instances waiting for the fetch see the
// keys they need appear; when the fetch failed, or its answer lacks a key
// it was asked for, it also marks the fetch done (one more
// BatchWriteItem), so that those waiting for that key stop.
func (g guarded) fetch(ctx context.Context, started, deadline time.Time, due map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	fctx, cancel := context.WithDeadline(ctx, deadline)
	res, ferr := g.KeyFetcher.FetchKeys(fctx, due)
	cancel()
	var err error
	if ferr == nil {
		err = g.db.StoreKeys(ctx, res)
	}
	if ferr != nil || err != nil || !answers(res, due) {
		if merr := g.mark(ctx, started, time.Time{}, due); err == nil {
			err = merr
		}
	}
	if ferr != nil {
		return nil, ferr
	}
	return res, err
}

// answers reports whether res holds every key asked for, or any key of
// the server for a request naming none (a key query's).
func answers(res map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) bool {
	servers := map[spec.ServerName]bool{}
	for req := range res {
		servers[req.ServerName] = true
	}
	for req := range requests {
		if _, ok := res[req]; !ok && (req.KeyID != "" || !servers[req.ServerName]) {
			return false
		}
	}
	return true
}

// due keeps the requests for servers this fetcher was not run for within
// MinRefetch, and marks those servers as being fetched from now until the
// deadline: one BatchGetItem and one BatchWriteItem of a mark per server.
// Of the others, it returns those whose fetch is still under way on
// another instance, with that fetch's mark.
func (g guarded) due(ctx context.Context, now, deadline time.Time, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (due map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp, elsewhere map[spec.ServerName]fetchMark, err error) {
	var ks []store.Key
	seen := map[spec.ServerName]bool{}
	for req := range requests {
		if string(req.ServerName) != g.local && !seen[req.ServerName] {
			seen[req.ServerName] = true
			ks = append(ks, g.markKey(req.ServerName))
		}
	}
	if len(ks) == 0 {
		return requests, nil, nil
	}
	recent := map[spec.ServerName]bool{}
	elsewhere = map[spec.ServerName]fetchMark{}
	err = g.db.Store.GetMany(ctx, ks, func(k store.Key, decode func(any) error) error {
		var m fetchMark
		if err := decode(&m); err != nil {
			return err
		}
		if m.FetchedTS > now.Add(-MinRefetch).UnixMilli() {
			server := spec.ServerName(strings.TrimPrefix(k.PK, markPrefix))
			recent[server] = true
			if m.inFlight() {
				elsewhere[server] = m
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("server keys: %w", err)
	}
	due = map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for req, ts := range requests {
		if !recent[req.ServerName] {
			due[req] = ts
		}
	}
	if err := g.mark(ctx, now, deadline, due); err != nil {
		return nil, nil, err
	}
	return due, elsewhere, nil
}

// mark writes the fetch marks of the servers of requests (but this one):
// fetched at started, under way until the deadline, or done when it is
// zero. One BatchWriteItem.
func (g guarded) mark(ctx context.Context, started, deadline time.Time, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) error {
	seen := map[spec.ServerName]bool{}
	var marks []any
	for req := range requests {
		if string(req.ServerName) == g.local || seen[req.ServerName] {
			continue
		}
		seen[req.ServerName] = true
		m := fetchMark{PK: markPrefix + string(req.ServerName), SK: g.FetcherName(),
			FetchedTS: started.UnixMilli(), Expires: started.Add(MinRefetch + time.Hour).Unix()}
		if !deadline.IsZero() {
			m.Until = deadline.UnixMilli()
		}
		marks = append(marks, m)
	}
	if len(marks) == 0 {
		return nil
	}
	if err := g.db.Store.PutMany(ctx, marks); err != nil {
		return fmt.Errorf("server keys: %w", err)
	}
	return nil
}

func (g guarded) markKey(server spec.ServerName) store.Key {
	return store.Key{PK: markPrefix + string(server), SK: g.FetcherName()}
}

// markPrefix starts the partition of a server's fetch marks.
const markPrefix = "serverfetch|"
