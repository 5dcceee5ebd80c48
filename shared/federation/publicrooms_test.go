package federation_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/federation"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// TestRemoteDirectory_Fallback: a server that answers a filtered POST
// /publicRooms with 404 M_UNRECOGNIZED (one that predates filtering over
// federation) is asked its whole list with GET, and the search term
// filters it here, on name, topic and canonical alias, case-insensitive,
// as Synapse falls back. A server that answers the POST with another
// error, or a list without chunk, is an error.
func TestRemoteDirectory_Fallback(t *testing.T) {
	var asked []string
	postAnswer := http.StatusNotFound
	remote := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		asked = append(asked, r.Method+" "+r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path != "/_matrix/federation/v1/publicRooms":
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPost:
			w.WriteHeader(postAnswer)
			code := "M_UNRECOGNIZED"
			if postAnswer == http.StatusForbidden {
				code = "M_FORBIDDEN"
			}
			w.Write([]byte(`{"errcode":"` + code + `","error":"no"}`))
		case r.URL.Query().Get("since") == "broken":
			w.Write([]byte(`{"rooms":[]}`))
		default:
			w.Write([]byte(`{"chunk":[{"room_id":"!a:x","name":"The Garden","num_joined_members":1},` +
				`{"room_id":"!b:x","topic":"gardening tips","num_joined_members":1},` +
				`{"room_id":"!c:x","canonical_alias":"#lobby:x","num_joined_members":1}],"next_batch":"n1"}`))
		}
	}))
	defer remote.Close()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	client, err := fedclient.New("origin.test", k, fedclient.Options{SkipVerify: true, IPRangeWhitelist: []string{"127.0.0.1/32"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &federation.RemoteDirectory{Client: client}
	server := remote.Listener.Addr().String()

	doc, err := dir.PublicRooms(background, server, rooms.DirectoryQuery{Search: "GARDEN", Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Chunk []struct {
			RoomID string `json:"room_id"`
		} `json:"chunk"`
		NextBatch string `json:"next_batch"`
	}
	if err := json.Unmarshal(doc, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Chunk) != 2 || page.Chunk[0].RoomID != "!a:x" || page.Chunk[1].RoomID != "!b:x" || page.NextBatch != "" {
		t.Fatalf("the list filtered here: %s", doc)
	}
	if want := "POST /_matrix/federation/v1/publicRooms,GET /_matrix/federation/v1/publicRooms"; strings.Join(asked, ",") != want {
		t.Fatalf("requests: %v, want %s", asked, want)
	}

	asked = nil
	doc, err = dir.PublicRooms(background, server, rooms.DirectoryQuery{Limit: 2, Since: "n1"})
	if err != nil || !strings.Contains(string(doc), `"next_batch":"n1"`) {
		t.Fatalf("unfiltered: %s %v", doc, err)
	}
	if want := "GET /_matrix/federation/v1/publicRooms?limit=2&since=n1"; strings.Join(asked, ",") != want {
		t.Fatalf("requests: %v, want %s", asked, want)
	}

	if _, err := dir.PublicRooms(background, server, rooms.DirectoryQuery{Since: "broken"}); err == nil {
		t.Fatal("an answer without chunk was taken")
	}
	postAnswer = http.StatusForbidden
	if _, err := dir.PublicRooms(background, server, rooms.DirectoryQuery{Search: "x"}); err == nil {
		t.Fatal("a POST refused with 403 was taken for a list")
	}
}
