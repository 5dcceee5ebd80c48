package sync

import (
	"context"
	"testing"
)

// TestUploads_Wait: a sync of a device sees its device's upload under way
// (and then reads the counts after it), waits for its end, and is held up
// by no other device's upload.
func TestUploads_Wait(t *testing.T) {
	var u uploads
	const phone, laptop = "@a:x\x00PHONE", "@a:x\x00LAPTOP"
	if u.wait(context.Background(), phone) {
		t.Fatal("waited with no upload under way")
	}
	done := u.begin(phone)
	// A cancelled context returns at once, saying the upload was seen.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if !u.wait(gone, phone) {
		t.Fatal("the phone's upload under way was not seen")
	}
	if u.wait(gone, laptop) {
		t.Fatal("the laptop's sync saw the phone's upload")
	}
	returned := make(chan bool)
	go func() { returned <- u.wait(context.Background(), phone) }()
	done()
	<-returned // whether it began before or after the end, it returns
	if u.wait(context.Background(), phone) {
		t.Fatal("waited after the upload ended")
	}
}

// TestKeyCounts_UploadSinceTheStreamRead: a sync whose token carries the
// device's counts, and whose stream read showed no news of them, reads
// them again when an upload of the device began and ended since it
// started: that upload has answered with the new counts, and the token's
// older ones, arriving after, would have the client upload again. Another
// device's upload reads nothing.
func TestKeyCounts_UploadSinceTheStreamRead(t *testing.T) {
	onServer := 0
	reads := 0
	s := &Service{KeyCounts: func(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
		reads++
		return map[string]int{"signed_curve25519": onServer}, nil, nil
	}}
	req := Request{UserID: "@a:x", DeviceID: "PHONE", Since: "token"}
	pos := position{Keys: &keyCounts{Device: deviceTag("PHONE"), OneTime: map[string]int{"signed_curve25519": 0}}}
	counts := func() int {
		t.Helper()
		var resp Response
		var next position
		if err := s.keyCounts(context.Background(), req, pos, req.uploadsBase, &resp, &next); err != nil {
			t.Fatal(err)
		}
		if next.Keys.OneTime["signed_curve25519"] != resp.OneTimeKeysCount["signed_curve25519"] {
			t.Fatalf("the token carries %v, the response %v", next.Keys.OneTime, resp.OneTimeKeysCount)
		}
		return resp.OneTimeKeysCount["signed_curve25519"]
	}

	req.uploadsBase = s.uploads.generation(deviceKey("@a:x", "PHONE"))
	s.uploads.begin(deviceKey("@a:x", "LAPTOP"))()
	if n := counts(); n != 0 || reads != 0 {
		t.Fatalf("with no upload of the device, got %d keys in %d reads; want the token's 0 and no read", n, reads)
	}
	done := s.uploads.begin(deviceKey("@a:x", "PHONE"))
	onServer = 50
	done()
	if n := counts(); n != 50 || reads != 1 {
		t.Fatalf("after the device's upload, got %d keys in %d reads; want the server's 50, read once", n, reads)
	}
}
