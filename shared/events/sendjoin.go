package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Joining a room through another server (server-server API, "Joining
// Rooms"): make_join's template filled and signed here, and send_join's
// answer checked before the room is taken in.

// SignJoinTemplate fills the template a resident server's make_join
// answered for userID in a room of version v: the event's type, room,
// sender and state key are set again whatever the template says, content
// is merged over the template's with membership "join", and the event is
// signed by this server.
func (s Signer) SignJoinTemplate(v, roomID, userID string, template []byte, content map[string]any, now time.Time) (PDU, error) {
	return s.SignMemberTemplate(v, roomID, userID, "join", template, content, now)
}

// SendJoinAnswer is what send_join answered: the state before the join,
// its auth chain, and the join as the resident server holds it (with its
// countersignature in a restricted room), all unchecked.
type SendJoinAnswer struct {
	State     []json.RawMessage `json:"state"`
	AuthChain []json.RawMessage `json:"auth_chain"`
	Event     json.RawMessage   `json:"event,omitempty"`
	// MembersOmitted says that State lacks member events (the joining
	// server asked with omit_members), ServersInRoom then lists the
	// servers in the room.
	MembersOmitted bool     `json:"members_omitted,omitempty"`
	ServersInRoom  []string `json:"servers_in_room,omitempty"`
}

func (a *SendJoinAnswer) GetAuthEvents() gomatrixserverlib.EventJSONs  { return jsons(a.AuthChain) }
func (a *SendJoinAnswer) GetStateEvents() gomatrixserverlib.EventJSONs { return jsons(a.State) }

func jsons(in []json.RawMessage) gomatrixserverlib.EventJSONs {
	out := make(gomatrixserverlib.EventJSONs, len(in))
	for i, r := range in {
		out[i] = spec.RawJSON(r)
	}
	return out
}

// CheckSendJoin checks send_join's answer to join, in a room of version
// v, with gomatrixserverlib's CheckSendJoinResponse: every state and auth
// chain event well formed, signed by its sender's server (keys through
// verifier), allowed by its auth events from the auth chain, the create
// event there, and join allowed by the state. It returns the join to keep
// (the answer's copy when it is the same event, which may carry the
// resident server's countersignature) and the checked state; an auth
// event the answer lacks is an error, not fetched.
func CheckSendJoin(ctx context.Context, v string, a *SendJoinAnswer, join PDU, verifier gomatrixserverlib.JSONVerifier) (PDU, []PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, nil, err
	}
	if len(a.Event) > 0 {
		if theirs, err := impl.NewEventFromUntrustedJSON(a.Event); err == nil && theirs.EventID() == join.EventID() {
			join = theirs
		}
	}
	missing := func(gomatrixserverlib.RoomVersion, []string) ([]PDU, error) {
		return nil, fmt.Errorf("the send_join answer lacks auth events")
	}
	if a.MembersOmitted {
		a = withJoinAuth(impl, a, join)
	}
	checked, err := gomatrixserverlib.CheckSendJoinResponse(ctx, impl.Version(), a, verifier, join, missing, userIDForSender)
	if err != nil {
		return nil, nil, &NotAllowedError{Reason: err.Error()}
	}
	state := checked.GetStateEvents().TrustedEvents(impl.Version(), false)
	return join, state, nil
}

// withJoinAuth is a, an answer without most member events, with the
// member events among join's auth events added to its state from its auth
// chain where the state lacks their key: they are the state before the
// join (auth events are chosen from it), and the join is checked against
// that state (the user authorising a restricted join, the joiner's
// earlier membership).
func withJoinAuth(impl gomatrixserverlib.IRoomVersion, a *SendJoinAnswer, join PDU) *SendJoinAnswer {
	want := map[string]bool{}
	for _, id := range join.AuthEventIDs() {
		want[id] = true
	}
	have := map[string]bool{}
	for _, raw := range a.State {
		if ev, err := impl.NewEventFromUntrustedJSON(raw); err == nil && ev.StateKey() != nil {
			have[ev.Type()+"\x00"+*ev.StateKey()] = true
		}
	}
	out := *a
	out.State = append([]json.RawMessage(nil), a.State...)
	for _, raw := range a.AuthChain {
		ev, err := impl.NewEventFromUntrustedJSON(raw)
		if err != nil || !want[ev.EventID()] || ev.Type() != Member || ev.StateKey() == nil {
			continue
		}
		if k := ev.Type() + "\x00" + *ev.StateKey(); !have[k] {
			have[k] = true
			out.State = append(out.State, raw)
		}
	}
	return &out
}
