package search_test

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSearch_Costs pins what docs/storage.md gives for the search index: a
// message writes one item (1 WCU) per distinct word, at most 32, in
// BatchWriteItem calls of 25; a search reads one Query per room and term,
// eventually consistent, then the visibility items and the events of the
// rooms with results.
func TestSearch_Costs(t *testing.T) {
	st := servertest.Start(t)
	alice, bob := st.Member(t, "alice"), st.Member(t, "bob")
	room := must[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(bg, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	must[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoom(bg, room.String(), nil))
	other := must[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})).RoomID
	say(t, alice, room, "warm the room's cache")
	say(t, alice, other, "warm the other room's cache")
	want := servertest.Want

	// The room's append (auth, record and pointer, slot, two stream
	// entries: 1 RCU, 5 WCU, as rooms' TestCosts has it), the entries in
	// one BatchWriteItem with the 8 words beside the slot: "the" twice is
	// one item, "a" is too short to index.
	say(t, alice, room, "The quick brown fox jumps over the lazy dog, a dog")
	st.CheckCost(t, "message of 8 distinct words", "/send/", want(5, 1, 5+8))

	// 100 distinct words: 32 indexed, with the 2 entries in two calls (the
	// slot is over 1 KB: 2 WCU).
	words := make([]string, 100)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	say(t, alice, room, strings.Join(words, " "))
	st.CheckCost(t, "message of 100 distinct words", "/send/", want(6, 1, 6+32))

	// An encrypted message has no text to index: nothing more than the
	// append.
	must[*mautrix.RespSendEvent](t, "send encrypted")(alice.SendMessageEvent(bg, room, event.EventEncrypted, map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "sender_key": "k", "session_id": "s", "device_id": "d"}))
	st.CheckCost(t, "encrypted message", "/send/", want(5, 1, 5))

	// auth; the memberships (one Query); the index of "fox" in each of
	// the 2 rooms (a Query each, 0.5 RCU eventually consistent); the info
	// and membership of the room with a hit (1 RCU each); one
	// BatchGetItem of its event (1 RCU).
	res := search(t, alice, &mautrix.ReqSearch{SearchTerm: "fox"})
	if len(res.Results) != 1 {
		t.Fatalf("results: %+v", res.Results)
	}
	st.CheckCost(t, "one word, 2 rooms, 1 result", "/search", want(7, 6, 0))

	// Two words: a Query per room and word.
	search(t, alice, &mautrix.ReqSearch{SearchTerm: "fox dog"})
	st.CheckCost(t, "two words, 2 rooms, 1 result", "/search", want(9, 7, 0))

	// No match: the Queries alone.
	search(t, alice, &mautrix.ReqSearch{SearchTerm: "giraffe"})
	st.CheckCost(t, "no match", "/search", want(4, 3, 0))
}
