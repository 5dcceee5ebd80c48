package serverkeys_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
)

// TestRequireServer_Lambda: behind the API Gateway adapter, the signature
// is checked over the path and query string exactly as sent, escapes and
// all, which is what the sender signed.
func TestRequireServer_Lambda(t *testing.T) {
	c := newClock()
	rm := newRemote(t, c)
	k, _ := newKeys(t, openStore(t), c, thisServer)
	handler := lambdahttp.Handler(k.RequireServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(echo{Origin: serverkeys.Origin(r.Context()), URI: r.RequestURI})
	})))
	const path, query = "/_matrix/federation/v1/state/%21room%2Fx%3Aa.example", "event_id=%24ev%2B1"
	fr := sign(t, rm.Name, thisServer, rm.Key, "GET", path+"?"+query, nil)
	second := sign(t, rm.Name, thisServer, mustKey(t), "GET", path+"?"+query, nil)
	for _, tc := range []struct {
		name, query, auth string
		status            int
	}{
		{"as signed", query, fr.auth, http.StatusOK},
		// A second signature, by a key the server does not have, joined
		// to the first by API Gateway: the first is checked.
		{"two headers joined", query, fr.auth + "," + second.auth, http.StatusOK},
		{"query decoded", "event_id=$ev+1", fr.auth, http.StatusUnauthorized},
		{"query changed", "event_id=%24ev%2B2", fr.auth, http.StatusUnauthorized},
	} {
		ev := events.APIGatewayV2HTTPRequest{
			RawPath: path, RawQueryString: tc.query,
			Headers: map[string]string{"authorization": tc.auth},
		}
		ev.RequestContext.HTTP.Method = "GET"
		res, err := handler(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, res.StatusCode, res.Body, tc.status)
			continue
		}
		if tc.status == http.StatusOK && (!strings.Contains(res.Body, `"origin":"`+rm.Name+`"`) || !strings.Contains(res.Body, `"uri":"`+path+"?"+query+`"`)) {
			t.Errorf("%s: %s, want the origin and the URI as sent", tc.name, res.Body)
		}
		if tc.status == http.StatusUnauthorized && !strings.Contains(res.Body, "M_UNAUTHORIZED") {
			t.Errorf("%s: %s, want M_UNAUTHORIZED", tc.name, res.Body)
		}
	}
}
