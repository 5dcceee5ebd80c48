package main

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestMediaWorkloads_Cirrus runs each media workload against a Cirrus
// stack, a few requests each, beside a Dendrite that failed to start: each
// measures on Cirrus, with its requests all successful, and fails on the
// other with its start error.
func TestMediaWorkloads_Cirrus(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_REGISTRATION_SHARED_SECRET="+benchSecret)
	ctx := context.Background()
	s := &server{Name: "cirrus", ClientURL: st.URL, client: newHTTPClient()}
	if err := setupUser(ctx, s); err != nil {
		t.Fatal(err)
	}
	down := &server{Name: "dendrite", startErr: errors.New("start dendrite: no binary")}
	for _, ep := range mediaWorkload() {
		rs := measureEndpoint(ctx, []*server{s, down}, ep, 3, 2, 1, 1)
		if len(rs) != 2 || rs[1].Failed != "start dendrite: no binary" {
			t.Fatalf("%s: results %+v, want cirrus's and the failed dendrite's", ep.name(), rs)
		}
		if r := rs[0]; r.Failed != "" || r.Errors != 0 || r.P50MS <= 0 {
			t.Errorf("%s on cirrus: %+v", ep.name(), r)
		}
	}
}

// TestVaried: every copy of a file differs from the others, and a JPEG's
// copies still decode to the same image.
func TestVaried(t *testing.T) {
	photo := photoJPEG()
	t.Logf("the bench JPEG: %d bytes", len(photo))
	if len(photo) < 900_000 || len(photo) > 1_300_000 {
		t.Errorf("the bench JPEG is %d bytes, want about 1 MB", len(photo))
	}
	for _, base := range [][]byte{photo, bytes.Repeat([]byte{7}, 64)} {
		v := newVaried(base)
		a, b := v.next(), v.next()
		if bytes.Equal(a, b) || bytes.Equal(a, base) {
			t.Errorf("copies of a %d-byte file are not new bytes", len(base))
		}
	}
	v := newVaried(photo)
	img, err := jpeg.Decode(bytes.NewReader(v.next()))
	if err != nil {
		t.Fatalf("a copy of the JPEG does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1800 || b.Dy() != 1350 {
		t.Errorf("a copy of the JPEG is %v, want 1800x1350", b)
	}
	if !strings.HasPrefix(describe(mediaWorkload()[1]), "GET /_matrix/client/v1/media/download/") {
		t.Errorf("the download workload is not described by its authenticated path")
	}
}
