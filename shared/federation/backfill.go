package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// Backfiller fetches a room's history older than what this server holds
// from the other servers in it (server-server API, "Backfilling and
// retrieving missing events", GET /_matrix/federation/v1/backfill). Its
// Fetch is rooms.Service.Backfiller: a client paging back past the
// lowest position of a room taken in through a remote join.
type Backfiller struct {
	Rooms  *rooms.Service
	Client *fedclient.Client
	// Verifier checks the events' signatures: serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	Logger   *slog.Logger
	// Timeout bounds one Fetch, every server tried; 0 is 10 s, so that the
	// client's /messages still answers within API Gateway's 30.
	Timeout time.Duration
}

// backfillAnswer is /backfill's answer, a transaction.
type backfillAnswer struct {
	Origin string            `json:"origin"`
	PDUs   []json.RawMessage `json:"pdus"`
}

// Fetch asks the servers joined to roomID (its current state), in turn,
// for up to limit events before from, and returns the first answer's
// events of the room that pass the checks on receipt this server can run
// without the room's state: format, hashes (a mismatch keeps the redacted
// form) and signatures. Events failing them are left out.
func (b *Backfiller) Fetch(ctx context.Context, roomID, version string, from []string, limit int) ([]events.PDU, error) {
	q := url.Values{"v": from, "limit": {strconv.Itoa(min(limit, rooms.MaxFederationEvents))}}
	path := "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID) + "?" + q.Encode()
	var out []events.PDU
	err := b.askEach(ctx, roomID, path, "backfill", func(ctx context.Context, server string, answer backfillAnswer) error {
		out = b.check(ctx, roomID, version, server, answer.PDUs)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backfill %s: %w", roomID, err)
	}
	return out, nil
}

// Event asks the servers joined to roomID (its current state), in turn,
// for the event eventID (GET /_matrix/federation/v1/event/{eventId}) and
// returns the first answer that is that event of the room, passing the
// checks Fetch makes; it is rooms.RemoteReads.Event. The event ID is that
// of the PDU as received (a reference hash from room version 3), so a
// server cannot answer another event in its place.
func (b *Backfiller) Event(ctx context.Context, roomID, version, eventID string) (events.PDU, error) {
	path := "/_matrix/federation/v1/event/" + url.PathEscape(eventID)
	var found events.PDU
	err := b.askEach(ctx, roomID, path, "fetching an event", func(ctx context.Context, server string, answer backfillAnswer) error {
		for _, ev := range b.check(ctx, roomID, version, server, answer.PDUs) {
			if ev.EventID() == eventID {
				found = ev
				return nil
			}
		}
		return fmt.Errorf("%s answered no event %s of the room that passes the checks", server, eventID)
	})
	if err != nil {
		return nil, fmt.Errorf("fetch event %s: %w", eventID, err)
	}
	return found, nil
}

// askEach GETs path from the other servers joined to roomID (its current
// state), in turn, within b.Timeout, until take keeps an answer (returns
// nil); otherwise the error is the last server's. what names the request
// in the log.
func (b *Backfiller) askEach(ctx context.Context, roomID, path, what string, take func(ctx context.Context, server string, answer backfillAnswer) error) error {
	timeout := b.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	servers, err := b.Rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	last := errors.New("no other server is in the room")
	for _, server := range servers {
		if server == b.Rooms.Signer.ServerName {
			continue
		}
		var answer backfillAnswer
		if err := b.Client.Get(ctx, server, path, &answer); err != nil {
			b.log().Info(what+" failed", "room", roomID, "path", path, "server", server, "err", err)
			last = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if last = take(ctx, server, answer); last == nil {
			return nil
		}
	}
	return last
}

// check keeps the PDUs of roomID that parse for its version and carry
// their senders' servers' signatures.
func (b *Backfiller) check(ctx context.Context, roomID, version, server string, raw []json.RawMessage) []events.PDU {
	verifier := b.Verifier
	if ring, ok := verifier.(*gomatrixserverlib.KeyRing); ok {
		// Each server's keys read from the table once for the answer, not
		// once per event (as Inbox.verifier does for a transaction).
		verifier = &gomatrixserverlib.KeyRing{KeyFetchers: ring.KeyFetchers,
			KeyDatabase: &memoKeys{KeyDatabase: ring.KeyDatabase, m: map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}}}
	}
	var out []events.PDU
	for _, r := range raw {
		ev, err := events.ParseUntrusted(version, r)
		if err != nil {
			b.log().Info("backfilled event refused", "room", roomID, "server", server, "err", trimLib(err))
			continue
		}
		if events.RoomID(ev) != roomID {
			b.log().Info("backfilled event of another room", "room", roomID, "server", server, "event", ev.EventID())
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, verifier, senderUserID); err != nil {
			b.log().Info("backfilled event refused", "room", roomID, "server", server, "event", ev.EventID(), "err", trimLib(err))
			continue
		}
		out = append(out, ev)
	}
	return out
}

func (b *Backfiller) log() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}
