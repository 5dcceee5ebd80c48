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
