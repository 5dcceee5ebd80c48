package events

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
)

// CheckState checks a room state another server gave (GET /state's pdus
// and auth_chain), in a room of version v, with gomatrixserverlib's
// CheckStateResponse: each event well formed, signed by its sender's
// server (keys through verifier) and allowed by its auth events from the
// auth chain. Events that fail are left out, as are those whose auth
// events the answer lacks; it returns the state events that pass.
func CheckState(ctx context.Context, v string, state, authChain []json.RawMessage, verifier gomatrixserverlib.JSONVerifier) ([]PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	missing := func(gomatrixserverlib.RoomVersion, []string) ([]PDU, error) {
		return nil, fmt.Errorf("the state answer lacks auth events")
	}
	a := &SendJoinAnswer{State: state, AuthChain: authChain}
	_, checked, err := gomatrixserverlib.CheckStateResponse(ctx, a, impl.Version(), verifier, missing, userIDForSender)
	if err != nil {
		return nil, &NotAllowedError{Reason: err.Error()}
	}
	return checked, nil
}
