package rooms_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
)

// TestRead_MessagesWithoutDir checks /messages without dir: backwards, as
// Synapse defaults it, for a member, and 403 for a caller who may not see
// the room, never a 400 that tells them the room exists.
func TestRead_MessagesWithoutDir(t *testing.T) {
	c := newChat(t)
	var page mautrix.RespMessages
	if err := rawQuery(c.bob, map[string]string{"limit": "2"}, &page, "v3", "rooms", c.room, "messages"); err != nil {
		t.Fatalf("messages without dir: %v", err)
	}
	wantEqual(t, "messages without dir", bodies(page.Chunk), []string{"m9", "m8"})

	carol := c.st.Member(t, "carol")
	private := create(t, c.alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	for _, q := range []map[string]string{nil, {"limit": "2"}, {"dir": "b"}} {
		err := rawQuery(carol, q, nil, "v3", "rooms", private, "messages")
		wantErr(t, "a non-member's messages", err, "M_FORBIDDEN", http.StatusForbidden)
	}
	// A dir that is neither is still refused.
	err := rawQuery(c.bob, map[string]string{"dir": "backwards"}, nil, "v3", "rooms", c.room, "messages")
	wantErr(t, "bad dir", err, "M_INVALID_PARAM", http.StatusBadRequest)
}
