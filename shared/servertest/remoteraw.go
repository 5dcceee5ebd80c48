package servertest

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// DoRaw is Do for answers that are not JSON objects (the [200, {...}] of
// the deprecated v1 send_join and send_leave): it returns the status and
// the body as they came.
func (rm *Remote) DoRaw(t testing.TB, base, method, uri string, body any) (int, []byte) {
	t.Helper()
	fr := fclient.NewFederationRequest(method, spec.ServerName(rm.Name), ServerName, uri)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(spec.ServerName(rm.Name), gomatrixserverlib.KeyID(rm.Key.ID), rm.Key.Private); err != nil {
		t.Fatal(err)
	}
	signed, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(fr.Content())
	}
	req, err := http.NewRequest(method, base+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", signed.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, raw
}
