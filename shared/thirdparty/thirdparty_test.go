package thirdparty_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestThirdParty: no bridges, so no protocols: the list is empty (Element
// asks for it at start), a protocol is unknown, and no room or user stands
// for a third-party one.
func TestThirdParty(t *testing.T) {
	st := servertest.Start(t)
	token := st.Register(t, "alice").AccessToken
	const base = "/_matrix/client/v3/thirdparty/"
	for _, tc := range []struct {
		path   string
		status int
		want   string // the body, or the errcode
	}{
		{"protocols", 200, `{}`},
		{"protocol/irc", 404, "M_NOT_FOUND"},
		{"location/irc?channel=%23matrix", 404, "M_NOT_FOUND"},
		{"user/irc?nick=alice", 404, "M_NOT_FOUND"},
		{"location?alias=%23irc_matrix:example.org", 200, `[]`},
		{"user?userid=@irc_alice:example.org", 200, `[]`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			status, got := get(t, st.URL+base+tc.path, token)
			if status != tc.status || (tc.status == 200 && got != tc.want) || (tc.status != 200 && !strings.Contains(got, `"errcode":"`+tc.want+`"`)) {
				t.Fatalf("GET %s: %d %s, want %d %s", tc.path, status, got, tc.status, tc.want)
			}
		})
	}
	if r := st.Do(t, "GET", base+"protocols", "", nil); r.Status != 401 {
		t.Fatalf("protocols without a token: %d %s", r.Status, r.Raw)
	}
}

// get answers a GET with the status and body: some answers here are JSON
// arrays, which servertest.Call refuses.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, strings.TrimSpace(string(body))
}
