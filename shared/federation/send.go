package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// The spec's limits on one transaction.
// https://spec.matrix.org/v1.19/server-server-api/#transactions
const (
	MaxPDUs = 50
	MaxEDUs = 100
)

// InboxKind is the queue message kind that asks the worker to drain a
// room's inbox: its body is {"room_id": ...}.
const InboxKind = "federation.inbox"

// Defaults of the Inbox's bounds.
const (
	// TxnTTL is how long the answer to a transaction is kept for the
	// origin's retries: Synapse keeps them a day.
	TxnTTL = 24 * time.Hour
	// DefaultVerifyTimeout bounds the signature checks of one /send, key
	// fetches included: after RequireServer's fetch of the origin's key
	// (serverkeys.DefaultFetchTimeout, 20 s, at worst) the answer still
	// comes within API Gateway's 30 s. The origin's own key is cached by
	// then; only other senders' keys can be fetched here.
	DefaultVerifyTimeout = 8 * time.Second
	verifyParallel       = 8
)

// ErrUnknownRoom is what RoomVersion returns for a room this server does
// not hold.
var ErrUnknownRoom = errors.New("unknown room")

// Inbox receives other servers' transactions (PUT /send/{txnId}): it checks
// each PDU's signatures and content hash at once, keeps the checked PDUs in
// a durable per-room inbox in the table and answers; a queue worker (Work)
// then gives each room's PDUs to the room engine, in the order they came,
// fetching what they lack from the origin.
type Inbox struct {
	Store *store.Store
	// RoomVersion returns the version of a room this server holds, or an
	// error wrapping ErrUnknownRoom.
	RoomVersion func(ctx context.Context, roomID string) (string, error)
	// Verifier checks event signatures: serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	// ACLAllows reports whether the room's server ACL lets serverName in;
	// nil lets every server in.
	ACLAllows func(ctx context.Context, roomID, serverName string) (bool, error)
	// Send queues a message of the given kind for the worker.
	Send func(ctx context.Context, kind string, body []byte) error
	// EDU is given each EDU of a transaction; nil drops them. Its error is
	// logged, never answered: EDUs have no per-item results.
	EDU func(ctx context.Context, origin string, edu EDU) error

	// Engine, Remote and ServerName serve the worker (worker.go).
	Engine     Engine
	Remote     Remote
	ServerName string
	// Extremities returns a room's forward extremities (get_missing_events'
	// earliest_events); nil sends none.
	Extremities func(ctx context.Context, roomID string) ([]string, int64, error)
	// Held returns those of ids this server holds in the room, so that
	// only the others of a state are fetched; nil fetches whole states.
	Held func(ctx context.Context, roomID string, ids []string) (map[string]events.PDU, error)

	// VerifyTimeout bounds the signature checks of one /send;
	// DefaultVerifyTimeout when 0.
	VerifyTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger gets the worker's lines; nil means slog.Default().
	Logger *slog.Logger
}

// EDU is an ephemeral data unit as a transaction carries it.
type EDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// Register adds PUT /_matrix/federation/v1/send/{txnID} to rt behind auth,
// which must verify the X-Matrix signature and put the origin where
// serverkeys.Origin finds it (serverkeys.Keys.RequireServer).
func (in *Inbox) Register(rt *httpapi.Router, auth func(http.Handler) http.Handler) {
	rt.Handle("PUT /_matrix/federation/v1/send/{txnID}", auth(httpapi.Handle(in.handleSend)))
}

// sendRequest is a transaction. Its origin and origin_server_ts are not
// used: the origin is the one the request's signature verified.
type sendRequest struct {
	PDUs []json.RawMessage `json:"pdus"`
	EDUs []json.RawMessage `json:"edus"`
}

// pduResult is one PDU's entry in the answer: {} or {"error": ...}.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// sendResponse is the answer to a transaction.
type sendResponse struct {
	PDUs map[string]pduResult `json:"pdus"`
}

// handleSend serves PUT /_matrix/federation/v1/send/{txnId}.
//
// A PDU whose checks fail here (not parseable for its room version, a
// signature that does not verify, a room this server is not in, an origin
// the room's ACL denies) gets its error in the answer; every other PDU gets
// {} once it is queued: its auth checks run later in the worker, as
// MSC3618 proposes, since a rejected or soft-failed event has no answer a
// sender acts on. The answer is kept a day: a retry of the transaction
// gets it again and queues nothing new.
// https://spec.matrix.org/v1.19/server-server-api/#put_matrixfederationv1sendtxnid
func (in *Inbox) handleSend(w http.ResponseWriter, r *http.Request) error {
	origin := serverkeys.Origin(r.Context())
	if origin == "" {
		return errors.New("send: no verified origin: the route is not behind RequireServer")
	}
	txnID := r.PathValue("txnID")
	var req sendRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	// Synapse answers 400 to a transaction over the limits, sytest checks it.
	if len(req.PDUs) > MaxPDUs || len(req.EDUs) > MaxEDUs {
		return httpapi.BadJSON("a transaction holds at most %d PDUs and %d EDUs, not %d and %d",
			MaxPDUs, MaxEDUs, len(req.PDUs), len(req.EDUs))
	}
	answer, err := in.receive(r.Context(), origin, txnID, req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, json.RawMessage(answer))
	return nil
}

// txnItem records a transaction: when it arrived (the inbox position of its
// PDUs) and, once it is done, its answer.
type txnItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Arrived int64  `dynamodbav:"t"`
	Answer  string `dynamodbav:"answer,omitempty"`
	Expires int64  `dynamodbav:"expires_at"`
}

func txnKey(origin, txnID string) store.Key {
	return store.Key{PK: "fedtxn|" + origin, SK: txnID}
}

// receive runs a transaction once: the first request claims the
// transaction ID with a conditional write, so a retry, even one running
// beside the first, finds the answer or redoes the same writes (the inbox
// keys come from the claimed arrival time), never queueing a PDU twice.
func (in *Inbox) receive(ctx context.Context, origin, txnID string, req sendRequest) ([]byte, error) {
	now := in.now()
	k := txnKey(origin, txnID)
	rec := txnItem{PK: k.PK, SK: k.SK, Arrived: now.UnixMilli(), Expires: now.Add(TxnTTL).Unix()}
	err := in.Store.Create(ctx, rec)
	if errors.Is(err, store.ErrExists) {
		var old txnItem
		if err := in.Store.Get(ctx, k, &old); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("send: read transaction: %w", err)
		} else if err == nil {
			if old.Answer != "" {
				return []byte(old.Answer), nil
			}
			// A request for it ran, or runs, and did not finish: do the
			// same work under its arrival time.
			rec.Arrived = old.Arrived
		}
	} else if err != nil {
		return nil, fmt.Errorf("send: claim transaction: %w", err)
	}

	results, items, err := in.check(ctx, origin, txnID, rec.Arrived, req.PDUs)
	if err != nil {
		// The transaction stays claimed but unanswered: the origin's
		// retry does it again.
		return nil, err
	}
	if err := in.enqueue(ctx, items); err != nil {
		return nil, err
	}
	in.edus(ctx, origin, req.EDUs)
	answer, err := json.Marshal(sendResponse{PDUs: results})
	if err != nil {
		return nil, fmt.Errorf("send: encode answer: %w", err)
	}
	rec.Answer = string(answer)
	if err := in.Store.Put(ctx, rec); err != nil {
		return nil, fmt.Errorf("send: record answer: %w", err)
	}
	return answer, nil
}

// inboxItem is one checked PDU waiting in its room's inbox.
type inboxItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Origin  string `dynamodbav:"origin"`
	Version string `dynamodbav:"v"`
	EventID string `dynamodbav:"id"`
	PDU     string `dynamodbav:"pdu"`
	// Tries counts the worker's failed attempts at it.
	Tries int64 `dynamodbav:"tries,omitempty"`
	room  string
}

const inboxPrefix = "q|"

func inboxPK(roomID string) string { return "fedin|" + roomID }

// inboxSK orders a room's PDUs by arrival, then by their place in the
// transaction.
func inboxSK(arrived int64, origin, txnID string, i int) string {
	return fmt.Sprintf("%s%013d|%s|%s|%02d", inboxPrefix, arrived, origin, txnID, i)
}

// checked is one PDU after its checks: its result and, when it passed,
// its inbox item.
type checked struct {
	eventID string
	err     string
	item    *inboxItem
	// failed is an error of this server's (reading the table): the
	// transaction is not answered, so that it comes again.
	failed error
}

// check runs each PDU's checks, several at once, within VerifyTimeout; it
// returns the per-PDU results and the items to queue, in transaction order.
func (in *Inbox) check(ctx context.Context, origin, txnID string, arrived int64, pdus []json.RawMessage) (map[string]pduResult, []inboxItem, error) {
	timeout := in.VerifyTimeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	versions := &versionCache{get: in.RoomVersion, allows: in.ACLAllows, m: map[string]versionResult{}, acls: map[string]versionResult{}}
	verifier := in.verifier()
	out := make([]checked, len(pdus))
	var g errgroup.Group
	g.SetLimit(verifyParallel)
	for i, raw := range pdus {
		g.Go(func() error {
			out[i] = in.checkPDU(ctx, versions, verifier, origin, raw)
			if out[i].item != nil {
				out[i].item.SK = inboxSK(arrived, origin, txnID, i)
			}
			return nil
		})
	}
	g.Wait()
	results := make(map[string]pduResult, len(pdus))
	var items []inboxItem
	for _, c := range out {
		if c.failed != nil {
			return nil, nil, c.failed
		}
		if c.item == nil {
			in.logger().LogAttrs(ctx, slog.LevelInfo, "inbound PDU refused", slog.String("origin", origin),
				slog.String("txn_id", txnID), slog.String("event_id", c.eventID), slog.String("reason", c.err))
		}
		if c.eventID == "" {
			continue // nothing to name it by
		}
		if c.item != nil {
			items = append(items, *c.item)
			results[c.eventID] = pduResult{}
		} else if _, ok := results[c.eventID]; !ok {
			results[c.eventID] = pduResult{Error: c.err}
		}
	}
	return results, items, nil
}

// pduHead is what check reads of a PDU before it knows the room's version.
type pduHead struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
	Type    string `json:"type"`
}

// checkPDU checks one PDU: the room's version, the format, the content hash
// (a mismatch keeps the redacted form, as the spec says), the signatures
// and the room's server ACL.
// https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu
func (in *Inbox) checkPDU(ctx context.Context, versions *versionCache, verifier gomatrixserverlib.JSONVerifier, origin string, raw json.RawMessage) checked {
	var head pduHead
	if err := json.Unmarshal(raw, &head); err != nil {
		return checked{err: "not a PDU"}
	}
	if head.RoomID == "" {
		// A version 12 create event names no room: its ID is the room's.
		return checked{eventID: guessEventID(raw, head, ""), err: "this server is not in the room this create event makes"}
	}
	v, err := versions.version(ctx, head.RoomID)
	if errors.Is(err, ErrUnknownRoom) {
		return checked{eventID: guessEventID(raw, head, ""), err: fmt.Sprintf("this server is not in room %s", head.RoomID)}
	}
	if err != nil {
		return checked{failed: fmt.Errorf("send: room %s: %w", head.RoomID, err)}
	}
	ev, err := events.ParseUntrusted(v, raw)
	if err != nil {
		return checked{eventID: guessEventID(raw, head, v), err: "invalid PDU: " + trimLib(err)}
	}
	id := ev.EventID()
	if err := events.CheckSize(raw); err != nil {
		return checked{eventID: id, err: "invalid PDU: " + err.Error()}
	}
	if head.EventID != "" && gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(v)).EventIDFormat() != gomatrixserverlib.EventIDFormatV1 {
		// Room version 3 on: the ID is the event's hash, never a field.
		return checked{eventID: id, err: fmt.Sprintf("invalid PDU: a PDU of room version %s has no event_id field", v)}
	}
	if redactedOnReceipt(raw, ev) {
		in.logger().LogAttrs(ctx, slog.LevelInfo, "inbound PDU content hash mismatch: kept redacted",
			slog.String("origin", origin), slog.String("room_id", head.RoomID), slog.String("event_id", id))
	}
	if in.ACLAllows != nil {
		ok, err := versions.acl(ctx, head.RoomID, origin)
		if err != nil {
			return checked{failed: fmt.Errorf("send: server ACL of %s: %w", head.RoomID, err)}
		}
		if !ok {
			return checked{eventID: id, err: fmt.Sprintf("server %s is denied by the server ACL of room %s", origin, head.RoomID)}
		}
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, verifier, senderUserID); err != nil {
		return checked{eventID: id, err: "signature check failed: " + trimLib(err)}
	}
	return checked{eventID: id, item: &inboxItem{
		PK: inboxPK(head.RoomID), Origin: origin, Version: v, EventID: id, PDU: string(ev.JSON()), room: head.RoomID,
	}}
}

// redactedOnReceipt reports whether ev, parsed from raw, is its redacted
// copy: its content did not match its content hash.
func redactedOnReceipt(raw json.RawMessage, ev events.PDU) bool {
	var doc struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 {
		return false
	}
	sent, err := gomatrixserverlib.CanonicalJSON(doc.Content)
	if err != nil {
		return false
	}
	kept, err := gomatrixserverlib.CanonicalJSON(ev.Content())
	return err == nil && !bytes.Equal(sent, kept)
}

// guessEventID names a PDU that could not be parsed for its room's version
// v ("" when the room is not known here): by its event_id field (room
// versions 1 and 2), else by its reference hash under v's rules, or the
// newest version's, which every version since 4 shares but for what
// redaction keeps.
func guessEventID(raw json.RawMessage, head pduHead, v string) string {
	if head.EventID != "" {
		return head.EventID
	}
	if v == "" {
		v = events.Versions()[len(events.Versions())-1]
	}
	impl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
	if err != nil {
		return ""
	}
	redacted, err := impl.RedactEventJSON(raw)
	if err != nil {
		return ""
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(redacted, &doc) != nil {
		return ""
	}
	delete(doc, "signatures")
	delete(doc, "unsigned")
	hashable, err := json.Marshal(doc)
	if err != nil {
		return ""
	}
	if hashable, err = gomatrixserverlib.CanonicalJSON(hashable); err != nil {
		return ""
	}
	sum := sha256.Sum256(hashable)
	switch impl.EventIDFormat() {
	case gomatrixserverlib.EventIDFormatV2:
		return "$" + base64.RawStdEncoding.EncodeToString(sum[:])
	case gomatrixserverlib.EventIDFormatV3:
		return "$" + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return ""
}

// senderUserID maps a sender ID to its user ID: the same string in every
// room version this server holds.
func senderUserID(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// trimLib drops the library's name from its messages.
func trimLib(err error) string {
	return strings.ReplaceAll(err.Error(), "gomatrixserverlib: ", "")
}

// versionCache reads each room's version, and its ACL, once per
// transaction.
type versionCache struct {
	get    func(context.Context, string) (string, error)
	allows func(context.Context, string, string) (bool, error)
	mu     sync.Mutex
	m      map[string]versionResult
	acls   map[string]versionResult // v "allow" or "deny"
}

// acl is allows for the origin (the same for a whole transaction).
func (c *versionCache) acl(ctx context.Context, roomID, origin string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.acls[roomID]; ok {
		return r.v == "allow", r.err
	}
	ok, err := c.allows(ctx, roomID, origin)
	r := versionResult{v: "deny", err: err}
	if ok {
		r.v = "allow"
	}
	c.acls[roomID] = r
	return ok, err
}

type versionResult struct {
	v   string
	err error
}

func (c *versionCache) version(ctx context.Context, roomID string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.m[roomID]; ok {
		return r.v, r.err
	}
	v, err := c.get(ctx, roomID)
	c.m[roomID] = versionResult{v, err}
	return v, err
}

// enqueue writes the checked PDUs to their rooms' inboxes and asks the
// worker to drain each of those rooms.
func (in *Inbox) enqueue(ctx context.Context, items []inboxItem) error {
	if len(items) == 0 {
		return nil
	}
	if in.Send == nil {
		return errors.New("send: no queue for inbound PDUs (queue_url)")
	}
	puts := make([]any, len(items))
	var rooms []string
	seen := map[string]bool{}
	for i, it := range items {
		puts[i] = it
		if !seen[it.room] {
			seen[it.room] = true
			rooms = append(rooms, it.room)
		}
	}
	if err := in.Store.PutMany(ctx, puts); err != nil {
		return fmt.Errorf("send: queue PDUs: %w", err)
	}
	for _, room := range rooms {
		if err := in.nudge(ctx, room); err != nil {
			return err
		}
	}
	return nil
}

// job is the body of an InboxKind message.
type job struct {
	RoomID string `json:"room_id"`
}

// nudge asks the worker to drain roomID's inbox.
func (in *Inbox) nudge(ctx context.Context, roomID string) error {
	body, err := json.Marshal(job{RoomID: roomID})
	if err != nil {
		return fmt.Errorf("nudge %s: %w", roomID, err)
	}
	if err := in.Send(ctx, InboxKind, body); err != nil {
		return fmt.Errorf("nudge %s: %w", roomID, err)
	}
	return nil
}

// edus hands the EDUs to in.EDU, if set; a malformed one is skipped.
func (in *Inbox) edus(ctx context.Context, origin string, raw []json.RawMessage) {
	if in.EDU == nil {
		return
	}
	for _, r := range raw {
		var e EDU
		if err := json.Unmarshal(r, &e); err != nil || e.Type == "" {
			continue
		}
		if err := in.EDU(ctx, origin, e); err != nil {
			in.logger().LogAttrs(ctx, slog.LevelWarn, "inbound EDU failed",
				slog.String("origin", origin), slog.String("edu_type", e.Type), slog.Any("error", err))
		}
	}
}

func (in *Inbox) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

func (in *Inbox) logger() *slog.Logger {
	if in.Logger != nil {
		return in.Logger
	}
	return slog.Default()
}

// verifier returns in.Verifier, reading each server's keys from the table
// at most once for as long as it is used (one transaction, one PDU's
// fetches): the KeyRing reads its database once per event otherwise.
func (in *Inbox) verifier() gomatrixserverlib.JSONVerifier {
	return memoVerifier(in.Verifier)
}

// memoVerifier is v reading each server's keys from the table at most once
// for as long as it is used, when v is a KeyRing (memoKeys).
func memoVerifier(v gomatrixserverlib.JSONVerifier) gomatrixserverlib.JSONVerifier {
	ring, ok := v.(*gomatrixserverlib.KeyRing)
	if !ok {
		return v
	}
	return &gomatrixserverlib.KeyRing{KeyFetchers: ring.KeyFetchers,
		KeyDatabase: &memoKeys{KeyDatabase: ring.KeyDatabase, m: map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}}}
}

// memoKeys is a KeyDatabase that remembers what it read or stored.
type memoKeys struct {
	gomatrixserverlib.KeyDatabase
	mu sync.Mutex
	m  map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult
}

func (k *memoKeys) FetchKeys(ctx context.Context, reqs map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	// Held across the table read, so that PDUs checked side by side
	// wait for the first one's read rather than each reading.
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	rest := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for req, ts := range reqs {
		if res, ok := k.m[req]; ok {
			out[req] = res
		} else {
			rest[req] = ts
		}
	}
	if len(rest) == 0 {
		return out, nil
	}
	got, err := k.KeyDatabase.FetchKeys(ctx, rest)
	if err != nil {
		return nil, err
	}
	for req, res := range got {
		k.m[req] = res
		out[req] = res
	}
	return out, nil
}

func (k *memoKeys) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	if err := k.KeyDatabase.StoreKeys(ctx, results); err != nil {
		return err
	}
	k.remember(results)
	return nil
}

func (k *memoKeys) remember(results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for req, res := range results {
		k.m[req] = res
	}
}
