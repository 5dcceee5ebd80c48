package todevice

import (
	"fmt"
	"testing"
	"time"
)

func TestCursor(t *testing.T) {
	now := time.UnixMicro(1_700_000_000_000_000)
	at := func(d time.Duration, id string) message { return message{SK: msgSK(now.Add(d), id)} }
	c := delivered([]message{at(-time.Minute, "old"), at(-2*time.Second, "a"), at(0, "b")})
	back, err := parseCursor(c.encode())
	if err != nil {
		t.Fatal(err)
	}
	if back.count != 3 || back.newest != now.UnixMicro() || len(back.ids) != 2 {
		t.Fatalf("cursor %q read back as %+v", c.encode(), back)
	}
	cases := []struct {
		name string
		msg  message
		want bool
	}{
		{"OlderThanLateWrites", at(-time.Minute, "other"), true},
		{"DeliveredRecently", at(-2*time.Second, "a"), true},
		{"Newest", at(0, "b"), true},
		{"LandedLate", at(-time.Second, "late"), false},
		{"Newer", at(time.Microsecond, "new"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			us, id, err := parseMsgSK(tc.msg.SK)
			if err != nil {
				t.Fatal(err)
			}
			if got := back.has(us, id); got != tc.want {
				t.Fatalf("has(%s) = %v, want %v", tc.msg.SK, got, tc.want)
			}
		})
	}
	for _, bad := range []string{"x", "1", "0.5", "101.5", "1.x", fmt.Sprint(-1, ".", 5)} {
		if _, err := parseCursor(bad); err == nil {
			t.Errorf("parseCursor(%q) accepted", bad)
		}
	}
	if empty, err := parseCursor(""); err != nil || empty.has(1, "a") {
		t.Fatalf("empty cursor: %+v, %v", empty, err)
	}
	if delivered(nil).encode() != "" {
		t.Fatal("a cursor of nothing delivered is not empty")
	}
}
