package lambdahttp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/bigbody"
	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// keyBucket stores objects in memory and presigns nothing.
type keyBucket struct{ puts int }

func (b *keyBucket) Put(context.Context, string, []byte, string, string) error { b.puts++; return nil }
func (b *keyBucket) Presign(_ context.Context, key string, _ time.Duration) (string, error) {
	return "https://bucket.s3.example/" + key, nil
}

// TestHandler_LargeResponse proves that no body over Lambda's 6 MB reaches
// API Gateway: counted as the runtime sends it (the JSON document, with the
// body escaped or in base64), whatever the handler writes. Behind
// shared/bigbody it is gzipped or redirected to the bucket; without it, the
// adapter answers 500 saying why.
func TestHandler_LargeResponse(t *testing.T) {
	random := make([]byte, 7<<20)
	rand.Read(random)
	// Each `"` becomes `\"`: 5.5 MB of it is over 6 MB as a JSON string.
	quotes := []byte(strings.Repeat(`{"k":"v"},`, 550<<10/10*10))
	plain := bytes.Repeat([]byte(`{"room_id":"!abc:example.org"},`), 7<<20/31)
	for _, tc := range []struct {
		name, contentType, accept string
		body                      []byte
		wantStatus                int // behind bigbody
	}{
		{name: "QuotesEscapedPastTheLimit", contentType: "application/json", body: quotes, wantStatus: 307},
		{name: "BinaryInBase64", contentType: "application/octet-stream", body: random, wantStatus: 307},
		{name: "PlainJSON", contentType: "application/json", body: plain, wantStatus: 307},
		{name: "PlainJSONGzipped", contentType: "application/json", accept: "gzip", body: plain, wantStatus: 200},
		{name: "JustUnder", contentType: "application/json", body: bytes.Repeat([]byte("a"), 5<<20), wantStatus: 200},
	} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tc.contentType)
			w.Write(tc.body)
		})
		ev := baseEvent()
		ev.RawPath, ev.RequestContext.HTTP.Path = "/_matrix/client/v3/sync", "/_matrix/client/v3/sync"
		if tc.accept != "" {
			ev.Headers["accept-encoding"] = tc.accept
		}
		t.Run(tc.name, func(t *testing.T) {
			bucket := &keyBucket{}
			limited := bigbody.Handler(bigbody.Options{Limit: lambdahttp.MaxPayload, Bucket: bucket}, h)
			res, _ := lambdahttp.Handler(limited)(context.Background(), ev)
			doc, _ := json.Marshal(res)
			if len(doc) > lambdahttp.MaxPayload {
				t.Fatalf("behind bigbody: a %d byte response reached API Gateway", len(doc))
			}
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("behind bigbody: status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == 307 && (bucket.puts != 1 || !strings.HasPrefix(res.Headers["Location"], "https://bucket.s3.example/"+bigbody.Prefix)) {
				t.Errorf("behind bigbody: %d puts, Location %q", bucket.puts, res.Headers["Location"])
			}
			if tc.accept == "gzip" && (res.Headers["Content-Encoding"] != "gzip" || !res.IsBase64Encoded) {
				t.Errorf("behind bigbody: Content-Encoding %q, base64 %v; want gzip in base64", res.Headers["Content-Encoding"], res.IsBase64Encoded)
			}

			res, _ = lambdahttp.Handler(h)(context.Background(), ev)
			doc, _ = json.Marshal(res)
			if len(doc) > lambdahttp.MaxPayload {
				t.Fatalf("alone: a %d byte response reached API Gateway", len(doc))
			}
			if tc.wantStatus == 200 && tc.accept == "" {
				if res.StatusCode != 200 || res.Body != string(tc.body) {
					t.Errorf("alone: status %d, want the body that fits", res.StatusCode)
				}
			} else if res.StatusCode != 500 || !strings.Contains(res.Body, "larger than the 6 MB a Lambda function may return") {
				t.Errorf("alone: %d %.200s, want 500 saying why", res.StatusCode, res.Body)
			}
		})
	}
}

// TestPayloadSize checks the estimate against the encoded response.
func TestPayloadSize(t *testing.T) {
	for _, body := range []string{"", `{"a":"<b>&\n\t\u2028é"}`, "plain text", "\xff\xfe binary"} {
		h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"abc"}}
		res, _ := lambdahttp.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Request-Id", "abc")
			w.Write([]byte(body))
		}))(context.Background(), baseEvent())
		doc, _ := json.Marshal(res)
		if got := lambdahttp.PayloadSize(h, []byte(body)); got < len(doc) || got > len(doc)+512 {
			t.Errorf("PayloadSize(%q) = %d, encoded %d", body, got, len(doc))
		}
	}
}
