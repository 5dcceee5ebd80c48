package todevice

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestSplit: 3 users' 200 messages of about 500 bytes go in parts whose
// JSON is within the bound, each message in exactly one, in user then
// device order, and the same way every time (a retry keeps the IDs).
func TestSplit(t *testing.T) {
	msgs := map[string]map[string]json.RawMessage{}
	for u := range 3 {
		user := fmt.Sprintf("@user%d:remote.example", u)
		msgs[user] = map[string]json.RawMessage{}
		for d := range 200 {
			msgs[user][fmt.Sprintf("DEV%03d", d)] = json.RawMessage(fmt.Sprintf(`{"body":%q}`, strings.Repeat("x", 480)))
		}
	}
	parts := split(msgs, maxEDUBytes-200)
	if len(parts) < 5 {
		t.Fatalf("%d parts of about 300 KB, want at least 5", len(parts))
	}
	seen := map[string]int{}
	last := ""
	for i, p := range parts {
		doc, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(doc) > maxEDUBytes-200 {
			t.Errorf("part %d: %d bytes, over %d", i, len(doc), maxEDUBytes-200)
		}
		for user, byDevice := range p {
			for device := range byDevice {
				seen[user+" "+device]++
			}
		}
		// Parts follow each other in user then device order.
		first := ""
		for user, byDevice := range p {
			for device := range byDevice {
				if k := user + " " + device; first == "" || k < first {
					first = k
				}
			}
		}
		if first <= last {
			t.Errorf("part %d starts at %s, not after %s", i, first, last)
		}
		for user, byDevice := range p {
			for device := range byDevice {
				if k := user + " " + device; k > last {
					last = k
				}
			}
		}
	}
	if len(seen) != 600 {
		t.Errorf("%d messages in the parts, want 600", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s in %d parts", k, n)
		}
	}
	if again := split(msgs, maxEDUBytes-200); !reflect.DeepEqual(again, parts) {
		t.Error("a second split of the same messages differs")
	}
	if got := partID("abc", 0) + " " + partID("abc", 2); got != "abc abc.2" {
		t.Errorf("part IDs %q", got)
	}
}
