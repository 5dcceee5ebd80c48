package sync

import (
	"encoding/base64"
	"errors"
	"reflect"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// FuzzParsePosition feeds parsePosition what clients may send as since,
// from and to: any string. It never panics; what it refuses is 400
// M_INVALID_PARAM; what it accepts holds only what the sync relies on
// (valid), and reads back the same once re-encoded.
func FuzzParsePosition(f *testing.F) {
	const user = "@alice:example.org"
	tag := userTag(user)
	good := position{User: tag, Time: 1700000000000, Sent: map[string][2]int64{"!r:example.org": {7, 1700000000000}},
		Ephemeral: 1699999999000, Presence: "online", Device: deviceTag("DEV"), ToDevice: "2.1700000000000000.abc",
		DeviceRead: 1700000000000, DeviceSeen: []int64{1700000000001}, Typing: map[string]int64{"!r:example.org": 1700000030000},
		Keys: &keyCounts{Device: "x", OneTime: map[string]int{"signed_curve25519": 50}, Fallback: []string{}}}
	f.Add(good.encode())
	f.Add(position{User: tag, Time: 1}.encode())
	for _, doc := range []string{
		`{"u":"` + tag + `","t":-1}`, `{"u":"` + tag + `","t":1.5}`, `{"u":"` + tag + `","t":9223372036854775807}`,
		`{"u":"` + tag + `","t":1,"r":{"not a room":[1,1]}}`, `{"u":"` + tag + `","t":1,"ty":{"!r":-5}}`,
		`{"u":"` + tag + `","t":1,"e":9223372036854775807}`, `{"u":"` + tag + `","t":1,"p":"away"}`,
		`{"u":"` + tag + `","t":1,"t":2}`, `{"u":"other","t":1}`, `[]`, `null`,
	} {
		f.Add("s" + base64.RawURLEncoding.EncodeToString([]byte(doc)))
	}
	f.Add("")
	f.Add("s")
	f.Add("t42")
	f.Add("s!!!")
	f.Fuzz(func(t *testing.T, token string) {
		p, err := parsePosition(token, user)
		if err != nil {
			var me *httpapi.Error
			if !errors.As(err, &me) || me.Status != 400 || me.Code != "M_INVALID_PARAM" {
				t.Fatalf("parsePosition(%q): %v, want 400 M_INVALID_PARAM", token, err)
			}
			return
		}
		if p.Time <= 0 || p.Time > maxMillis || p.User != tag {
			t.Fatalf("parsePosition(%q) = %+v: time or user out of bounds", token, p)
		}
		for room := range p.Sent {
			if !rooms.ValidRoomID(room) {
				t.Fatalf("parsePosition(%q): %q in sent is not a room ID", token, room)
			}
		}
		again, err := parsePosition(p.encode(), user)
		if err != nil {
			t.Fatalf("parsePosition(%q) = %+v, whose encoding %q does not parse: %v", token, p, p.encode(), err)
		}
		if again.encode() != p.encode() {
			t.Fatalf("parsePosition(%q) = %+v, which reads back as %+v", token, p, again)
		}
		if !reflect.DeepEqual(again.Sent, p.Sent) && len(p.Sent) > 0 {
			t.Fatalf("parsePosition(%q): sent %v reads back as %v", token, p.Sent, again.Sent)
		}
	})
}
