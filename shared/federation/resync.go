package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// ResyncKind is the kind of the queue messages that load the whole state
// of a room joined with partial state.
const ResyncKind = "partial-state"

// resyncTimeout bounds the fetch of a room's state from one server: the
// state of a room of 50,000 members is tens of MB.
const resyncTimeout = 5 * time.Minute

// Resync loads, in the background, the state that a join with partial
// state left out (rooms/partial.go): a queue message per join, whose
// worker asks the servers in the room in turn for the state before the
// join (GET /state), checks it and gives it to the room engine.
type Resync struct {
	Rooms *rooms.Service
	// Remote fetches the state: fedclient.Client.Federation().
	Remote     Remote
	ServerName string
	// Verifier checks the events' signatures: serverkeys.Keys.Ring().
	Verifier gomatrixserverlib.JSONVerifier
	Logger   *slog.Logger
	// Queue sends the message; nil (a server without one) loads the state
	// before Start returns.
	Queue func() interface {
		Send(ctx context.Context, kind string, body []byte) error
	}
	// Loaded hears of the member events added to the current state (the
	// presence and device list indexes of remote members); may be nil.
	Loaded func(ctx context.Context, roomID string, added []events.PDU) error
}

// resyncJob is a queue message: the room, its version, the local join
// that took it in, and the servers to ask, in order.
type resyncJob struct {
	Room    string   `json:"room"`
	Version string   `json:"v"`
	Join    string   `json:"join"`
	Servers []string `json:"servers"`
}

// Start has the state of roomID loaded after the join joinID took it in
// with partial state.
func (r *Resync) Start(ctx context.Context, roomID, version, joinID string, servers []string) error {
	body, err := json.Marshal(resyncJob{Room: roomID, Version: version, Join: joinID, Servers: servers})
	if err != nil {
		return err
	}
	if r.Queue != nil {
		if q := r.Queue(); q != nil {
			if err := q.Send(ctx, ResyncKind, body); err != nil {
				return fmt.Errorf("queue the state of %s: %w", roomID, err)
			}
			return nil
		}
	}
	return r.Work(ctx, body)
}

// Work handles a queue message: the state before the join, from the first
// server that gives it, is checked and added to the room. A room whose
// state is whole already is done; a failure of every server leaves the
// message to be delivered again.
func (r *Resync) Work(ctx context.Context, body []byte) error {
	var job resyncJob
	if err := json.Unmarshal(body, &job); err != nil {
		r.log().Warn("partial state: a message that does not parse is dropped", "err", err)
		return nil
	}
	partial, err := r.Rooms.PartialServers(ctx, job.Room)
	if err != nil {
		return err
	}
	if partial == nil {
		return nil
	}
	var errs []error
	for _, server := range job.Servers {
		t0 := time.Now()
		state, err := r.fetch(ctx, job, server, 0)
		if err != nil {
			r.log().Info("partial state: fetch failed", "room", job.Room, "server", server, "err", err)
			errs = append(errs, err)
			continue
		}
		t1 := time.Now()
		added, err := r.Rooms.CompletePartialState(ctx, job.Room, job.Join, state)
		if err != nil {
			return fmt.Errorf("load the state of %s: %w", job.Room, err)
		}
		r.log().Info("partial state: loaded", "room", job.Room, "server", server, "state", len(state), "added", len(added),
			"fetch", t1.Sub(t0), "load", time.Since(t1))
		if r.Loaded != nil && len(added) > 0 {
			return r.Loaded(ctx, job.Room, added)
		}
		return nil
	}
	return fmt.Errorf("no server gave the state of %s: %w", job.Room, errors.Join(errs...))
}

// fetch asks server for the state before the join and checks it; a
// state of more than max events (when max is not 0) is an error, before
// the checks' CPU is spent on it.
func (r *Resync) fetch(ctx context.Context, job resyncJob, server string, max int) ([]events.PDU, error) {
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	res, err := r.Remote.LookupState(ctx, spec.ServerName(r.ServerName), spec.ServerName(server), job.Room, job.Join, gomatrixserverlib.RoomVersion(job.Version))
	if err != nil {
		return nil, err
	}
	if max > 0 && len(res.StateEvents) > max {
		return nil, fmt.Errorf("the state holds %d events, more than %d", len(res.StateEvents), max)
	}
	return events.CheckState(ctx, job.Version, raws(res.StateEvents), raws(res.AuthEvents), memoVerifier(r.Verifier))
}

func raws(in gomatrixserverlib.EventJSONs) []json.RawMessage {
	out := make([]json.RawMessage, len(in))
	for i, r := range in {
		out[i] = json.RawMessage(r)
	}
	return out
}

func (r *Resync) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}
