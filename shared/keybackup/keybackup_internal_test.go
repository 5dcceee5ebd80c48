package keybackup

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"1", 1, true}, {"42", 42, true}, {"18446744073709551615", 18446744073709551615, true},
		{"0", 0, false}, {"01", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {" 1", 0, false},
		{"1.0", 0, false}, {"abc", 0, false}, {"", 0, false}, {"18446744073709551616", 0, false},
	} {
		got, ok := parseVersion(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseVersion(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	// Sort keys order as numbers, so that the newest version reads first.
	if !(versionSK(9) < versionSK(10) && versionSK(10) < versionSK(18446744073709551615)) {
		t.Errorf("version sort keys do not sort as numbers: %q, %q", versionSK(9), versionSK(10))
	}
}

func TestKeySK(t *testing.T) {
	for _, room := range []string{"!a:b", "!a|b:c", "!a%7Cb:c", "!%:c", "!|:c"} {
		sk := keySK(room, "s|e/s+")
		if !strings.HasPrefix(sk, roomPrefix(room)) {
			t.Errorf("%q does not begin with the prefix of %q", sk, room)
		}
		if r, s := parseKeySK(sk); r != room || s != "s|e/s+" {
			t.Errorf("parseKeySK(%q) = %q, %q; want %q, %q", sk, r, s, room, "s|e/s+")
		}
	}
	if strings.HasPrefix(keySK("!a|b:c", "s"), roomPrefix("!a")) {
		t.Error("a room's prefix matches another room's keys")
	}
}

// TestChunkLen: a transaction takes at most 99 keys, and stays under
// DynamoDB's 4 MB however large the keys.
func TestChunkLen(t *testing.T) {
	sessions := func(n, size int) []Session {
		out := make([]Session, n)
		for i := range out {
			out[i] = Session{RoomID: "!r:x", SessionID: "s", Data: KeyData{SessionData: json.RawMessage(strings.Repeat("a", size))}}
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		n, size    int
		wantChunks []int
	}{
		{"Few", 3, 100, []int{3}},
		{"Exactly99", 99, 100, []int{99}},
		{"Many", 250, 100, []int{99, 99, 52}},
		{"Large", 40, 300_000, []int{10, 10, 10, 10}},
		{"OneHuge", 2, 390_000, []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pending := sessions(tc.n, tc.size)
			var got []int
			for len(pending) > 0 {
				n := chunkLen("@u:x", "1", pending)
				got = append(got, n)
				pending = pending[n:]
			}
			if len(got) != len(tc.wantChunks) {
				t.Fatalf("chunks %v, want %v", got, tc.wantChunks)
			}
			for i := range got {
				if got[i] != tc.wantChunks[i] {
					t.Fatalf("chunks %v, want %v", got, tc.wantChunks)
				}
			}
		})
	}
}

// TestPrepare: a session given twice keeps its better key, so that a
// transaction never touches one item twice.
func TestPrepare(t *testing.T) {
	worse := KeyData{FirstMessageIndex: 5, SessionData: json.RawMessage(`{"k": "worse"}`)}
	best := KeyData{FirstMessageIndex: 1, SessionData: json.RawMessage(`{"k": "best"}`)}
	got, err := prepare("@u:x", "1", []Session{
		{RoomID: "!b:x", SessionID: "s", Data: worse},
		{RoomID: "!a:x", SessionID: "s", Data: worse},
		{RoomID: "!b:x", SessionID: "s", Data: best},
		{RoomID: "!b:x", SessionID: "s", Data: worse},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RoomID != "!a:x" || got[1].RoomID != "!b:x" || string(got[1].Data.SessionData) != `{"k":"best"}` {
		t.Errorf("prepare gave %+v", got)
	}
}
