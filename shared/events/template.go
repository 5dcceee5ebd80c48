package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// templateDrops are the fields of a built event a template leaves out: the
// server of the user it is for hashes, signs and names the event itself.
var templateDrops = []string{"hashes", "signatures", "event_id", "unsigned"}

// Template builds the event p of a room of version v after g, with auth
// events chosen from state, as a resident server offers it to another
// server's user in make_join and make_leave: the event Build makes,
// without its hashes, signatures and event ID, and with auth_events and
// prev_events in the room version's own form (event references in
// versions 1 and 2). The built event is returned too, for the auth check
// the template must pass.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1make_joinroomiduserid
func (s Signer) Template(v string, p Proto, g Graph, state *State, now time.Time) (json.RawMessage, PDU, error) {
	ev, err := s.Build(v, p, g, state, now)
	if err != nil {
		return nil, nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON(), &fields); err != nil {
		return nil, nil, fmt.Errorf("template of %s: %w", p.Type, err)
	}
	for _, k := range templateDrops {
		delete(fields, k)
	}
	tmpl, err := json.Marshal(fields)
	if err != nil {
		return nil, nil, fmt.Errorf("template of %s: %w", p.Type, err)
	}
	return tmpl, ev, nil
}

// Countersign adds this server's signature to ev, another server's event:
// a resident server signs the restricted joins it authorises
// (join_authorised_via_users_server) before it sends them on.
func (s Signer) Countersign(ev PDU) PDU {
	return ev.Sign(s.ServerName, gomatrixserverlib.KeyID(s.Key.ID), s.Key.Private)
}

// VerifyOrigin checks that ev carries a valid signature of server, under
// the key that server had when ev was sent: what a resident server checks
// of a join or leave another server's user sends it through send_join or
// send_leave, before any other server signs it.
func VerifyOrigin(ctx context.Context, verifier gomatrixserverlib.JSONVerifier, server string, ev PDU) error {
	impl, err := version(string(ev.Version()))
	if err != nil {
		return err
	}
	redacted, err := impl.RedactEventJSON(ev.JSON())
	if err != nil {
		return fmt.Errorf("redact %s: %w", ev.EventID(), err)
	}
	res, err := verifier.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName:           spec.ServerName(server),
		Message:              redacted,
		AtTS:                 ev.OriginServerTS(),
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return fmt.Errorf("verify %s: %w", ev.EventID(), err)
	}
	if res[0].Error != nil {
		return &NotAllowedError{Reason: "signature of " + server + ": " + res[0].Error.Error()}
	}
	return nil
}
