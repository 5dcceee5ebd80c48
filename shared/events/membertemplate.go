package events

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// SignMemberTemplate fills the template a resident server's make_join,
// make_leave or make_knock answered for userID in a room of version v:
// type, room, sender and state key set again, content merged over the
// template's with the membership given, the event signed by this server.
func (s Signer) SignMemberTemplate(v, roomID, userID, membership string, template []byte, content map[string]any, now time.Time) (PDU, error) {
	impl, err := version(v)
	if err != nil {
		return nil, err
	}
	var proto gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(template, &proto); err != nil {
		return nil, fmt.Errorf("make_%s template: %w", membership, err)
	}
	merged := map[string]any{}
	if len(proto.Content) > 0 {
		_ = json.Unmarshal(proto.Content, &merged) // a template's odd content is replaced
	}
	for k, val := range content {
		merged[k] = val
	}
	merged["membership"] = membership
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	if err := CheckContent(raw); err != nil {
		return nil, fmt.Errorf("%s content: %w", membership, err)
	}
	key := userID
	proto.Type, proto.RoomID, proto.SenderID, proto.StateKey = Member, roomID, userID, &key
	proto.Content, proto.Redacts, proto.Unsigned = raw, "", nil
	if proto.PrevEvents == nil {
		proto.PrevEvents = []string{}
	}
	if proto.AuthEvents == nil {
		proto.AuthEvents = []string{}
	}
	b := impl.NewEventBuilderFromProtoEvent(&proto)
	ev, err := b.Build(now, spec.ServerName(s.ServerName), gomatrixserverlib.KeyID(s.Key.ID), s.Key.Private)
	if err != nil {
		return nil, fmt.Errorf("build %s event: %w", membership, err)
	}
	return ev, nil
}
