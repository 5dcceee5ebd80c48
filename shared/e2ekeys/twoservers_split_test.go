package e2ekeys_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestTwoServers_ToDeviceSplit: alice@A sends 40 KB to each of bob@B's
// three devices in one sendToDevice. A sends them in several
// m.direct_to_device EDUs, each within 64 KB and with its own message ID,
// and each of bob's devices gets its message once.
func TestTwoServers_ToDeviceSplit(t *testing.T) {
	ctx := context.Background()
	ts := startTwoServers(t)
	alice := ts.alice
	bobs := []*device{ts.bob, login(t, ts.b, ts.bob.user, "BOB2", ""), login(t, ts.b, ts.bob.user, "BOB3", "")}
	syncs := make([]*syncer, len(bobs))
	for i, d := range bobs {
		syncs[i] = newSyncer(t, ts.b, d.user)
	}

	var mu sync.Mutex
	var sent []string
	next := ts.a.Server.ToDevice.SendEDU
	ts.a.Server.ToDevice.SendEDU = func(ctx context.Context, dests []string, eduType string, content json.RawMessage) error {
		var edu struct {
			MessageID string                                `json:"message_id"`
			Messages  map[string]map[string]json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(content, &edu); err != nil {
			return err
		}
		mu.Lock()
		sent = append(sent, fmt.Sprintf("%s %d %d", edu.MessageID, len(edu.Messages[ts.bob.user.ID]), len(content)))
		mu.Unlock()
		return next(ctx, dests, eduType, content)
	}

	body := func(d *device) string { return string(d.id()) + " " + strings.Repeat("x", 40000) }
	msgs := map[id.DeviceID]*event.Content{}
	for _, d := range bobs {
		msgs[d.id()] = &event.Content{Raw: map[string]any{"body": body(d)}}
	}
	if _, err := alice.c.SendToDevice(ctx, event.Type{Type: "m.test", Class: event.ToDeviceEventType},
		&mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{id.UserID(ts.bob.user.ID): msgs}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	edus := slices.Clone(sent)
	mu.Unlock()
	if len(edus) != 3 {
		t.Fatalf("EDUs sent for three messages of 40 KB: %q, want 3 of one message each", edus)
	}
	ids := map[string]bool{}
	for _, e := range edus {
		var mid string
		var n, size int
		fmt.Sscanf(e, "%s %d %d", &mid, &n, &size)
		if n != 1 || size > 65536 || ids[mid] {
			t.Errorf("EDU %q: want one message, at most 65536 bytes, a message ID of its own", e)
		}
		ids[mid] = true
	}

	for i, d := range bobs {
		var got []string
		eventually(t, "alice's message to "+string(d.id()), func() (string, bool) {
			got = append(got, bodies(syncs[i].next(t))...)
			return fmt.Sprint(len(got)), len(got) > 0
		})
		// Whatever else may still come would come in this sync.
		got = append(got, bodies(syncs[i].next(t))...)
		if want := []string{body(d)}; !slices.Equal(got, want) {
			t.Errorf("%s got %d messages (%.40q), want its own once", d.id(), len(got), got)
		}
	}
}

// bodies lists the bodies of the to-device events of a sync answer.
func bodies(body map[string]any) []string {
	td, _ := body["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	var out []string
	for _, e := range evs {
		ev, _ := e.(map[string]any)
		content, _ := ev["content"].(map[string]any)
		b, _ := content["body"].(string)
		out = append(out, b)
	}
	return out
}
