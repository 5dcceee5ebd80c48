package bigbody_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/bigbody"
	"github.com/cirrus-matrix/cirrus/shared/bigbody/fakes3"
)

// memBucket is a Bucket in memory whose URLs name the key.
type memBucket struct {
	objects map[string][]byte
	enc     map[string]string
}

func (b *memBucket) Put(_ context.Context, key string, body []byte, _, encoding string) error {
	b.objects[key], b.enc[key] = append([]byte(nil), body...), encoding
	return nil
}

func (b *memBucket) Presign(_ context.Context, key string, _ time.Duration) (string, error) {
	return "https://bucket.example/" + key + "?X-Amz-Signature=x", nil
}

// noiseBody is a JSON document of random base64 that gzip shrinks by a
// quarter at most.
func noiseBody(n int) []byte {
	raw := make([]byte, n*3/4)
	rand.Read(raw)
	return []byte(`{"x":"` + base64.StdEncoding.EncodeToString(raw) + `"}`)
}

// jsonBody is a JSON document of about n bytes that gzip shrinks tenfold or
// more when repetitive, and barely when random.
func jsonBody(n int, random bool) []byte {
	var sb strings.Builder
	sb.WriteString(`{"rooms":[`)
	for i := 0; sb.Len() < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		if random {
			var b [24]byte
			for j := range b {
				b[j] = "abcdefghijklmnopqrstuvwxyz0123456789"[(i*7919+j*104729+(i*j)%97)%36]
			}
			sb.WriteString(`"` + string(b[:]) + `"`)
			continue
		}
		sb.WriteString(`"!room:example.org"`)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}

func TestHandler(t *testing.T) {
	const limit = 64 << 10
	small, big := jsonBody(10<<10, false), jsonBody(200<<10, false)
	noise := noiseBody(300 << 10)
	for _, tc := range []struct {
		name           string
		method, accept string
		body           []byte
		status         int
		noBucket       bool
		wantStatus     int
		wantEncoding   string
		wantSpilled    bool
	}{
		{name: "Small", method: "GET", body: small, wantStatus: 200},
		{name: "SmallWithGzip", method: "GET", accept: "gzip", body: small, wantStatus: 200},
		{name: "BigGzipped", method: "GET", accept: "gzip, deflate, br", body: big, wantStatus: 200, wantEncoding: "gzip"},
		{name: "BigNoGzip", method: "GET", body: big, wantStatus: 307, wantSpilled: true},
		{name: "BigGzipRefused", method: "GET", accept: "gzip;q=0, identity", body: big, wantStatus: 307, wantSpilled: true},
		{name: "NoiseGzipTooBig", method: "GET", accept: "gzip", body: noise, wantStatus: 307, wantSpilled: true},
		{name: "PostSeeOther", method: "POST", body: big, wantStatus: 303, wantSpilled: true},
		{name: "HeadUntouched", method: "HEAD", body: big, wantStatus: 200},
		{name: "NoBucket", method: "GET", body: big, noBucket: true, wantStatus: 500},
		{name: "ErrorNotSpilled", method: "GET", body: big, status: 404, wantStatus: 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := &memBucket{objects: map[string][]byte{}, enc: map[string]string{}}
			o := bigbody.Options{Limit: limit, RequestLimit: 6 << 20, Bucket: bucket}
			if tc.noBucket {
				o.Bucket = nil
			}
			h := bigbody.Handler(o, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tc.status != 0 {
					w.WriteHeader(tc.status)
				}
				w.Write(tc.body)
			}))
			req := httptest.NewRequest(tc.method, "/_matrix/client/v3/sync", nil)
			if tc.accept != "" {
				req.Header.Set("Accept-Encoding", tc.accept)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			got, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %.200s", res.StatusCode, tc.wantStatus, got)
			}
			if tc.method != "HEAD" && len(got) > limit {
				t.Errorf("answered %d bytes directly, over the limit %d", len(got), limit)
			}
			if enc := res.Header.Get("Content-Encoding"); enc != tc.wantEncoding {
				t.Errorf("Content-Encoding %q, want %q", enc, tc.wantEncoding)
			}
			switch {
			case tc.wantEncoding == "gzip":
				zr, err := gzip.NewReader(bytes.NewReader(got))
				if err != nil {
					t.Fatal(err)
				}
				plain, _ := io.ReadAll(zr)
				if !bytes.Equal(plain, tc.body) {
					t.Errorf("gunzipped body differs from the handler's (%d bytes, want %d)", len(plain), len(tc.body))
				}
			case tc.wantSpilled:
				loc := res.Header.Get("Location")
				key := strings.TrimSuffix(strings.TrimPrefix(loc, "https://bucket.example/"), "?X-Amz-Signature=x")
				stored, ok := bucket.objects[key]
				if !ok || !strings.HasPrefix(key, bigbody.Prefix) {
					t.Fatalf("Location %q names no stored object under %s", loc, bigbody.Prefix)
				}
				if bucket.enc[key] == "gzip" {
					zr, _ := gzip.NewReader(bytes.NewReader(stored))
					stored, _ = io.ReadAll(zr)
				}
				if !bytes.Equal(stored, tc.body) {
					t.Errorf("stored body differs from the handler's")
				}
				if res.Header.Get("Content-Type") != "" || len(got) != 0 {
					t.Errorf("redirect has Content-Type %q and %d body bytes, want neither", res.Header.Get("Content-Type"), len(got))
				}
			case tc.wantStatus == 500:
				var e struct{ Errcode, Error string }
				if err := json.Unmarshal(got, &e); err != nil || e.Errcode != "M_UNKNOWN" || !strings.Contains(e.Error, "larger than a Lambda function may return") {
					t.Errorf("body %s, want M_UNKNOWN saying why", got)
				}
			case tc.method != "HEAD" && !bytes.Equal(got, tc.body):
				t.Errorf("body changed")
			}
		})
	}
}

func TestHandler_RequestTooLarge(t *testing.T) {
	h := bigbody.Handler(bigbody.Options{Limit: 6 << 20, RequestLimit: 6 << 20}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the handler ran")
	}))
	req := httptest.NewRequest("PUT", "/_matrix/client/v3/room_keys/keys?version=1", strings.NewReader("{}"))
	req.ContentLength = 7 << 20
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var e struct{ Errcode, Error string }
	json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != 413 || e.Errcode != "M_TOO_LARGE" || !strings.Contains(e.Error, "6 MB a Lambda function accepts") {
		t.Errorf("got %d %s, want 413 M_TOO_LARGE saying why", rec.Code, rec.Body)
	}
}

// TestS3_Fakes3 spills through the real SDK into the embedded S3 API and
// follows the redirect with a plain HTTP client, as a Matrix client would.
func TestS3_Fakes3(t *testing.T) {
	srv, err := fakes3.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()
	b, err := bigbody.OpenS3(ctx, "large", srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.CreateBucket(ctx); err != nil {
		t.Fatal(err)
	}
	// Go's client asks for gzip by itself: noise does not fit even so.
	body := noiseBody(300 << 10)
	api := httptest.NewServer(bigbody.Handler(bigbody.Options{Limit: 20 << 10, Bucket: b}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})))
	defer api.Close()
	// Another host than the bucket's, as in AWS: Go's client drops the
	// Authorization header on the way there (the embedded S3 API refuses
	// it, as S3 does).
	apiURL := strings.Replace(api.URL, "127.0.0.1", "localhost", 1)
	for _, accept := range []string{"", "gzip"} {
		req, _ := http.NewRequest("GET", apiURL+"/_matrix/client/v3/room_keys/keys?version=1", nil)
		req.Header.Set("Authorization", "Bearer secret")
		req.Header.Set("Origin", "https://app.element.io")
		if accept != "" {
			// Set by hand, Go's client leaves the body compressed.
			req.Header.Set("Accept-Encoding", accept)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.Request.URL.Host != strings.TrimPrefix(srv.URL(), "http://") {
			t.Errorf("accept %q: ended at %s, want the bucket", accept, res.Request.URL)
		}
		if res.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			got, _ = io.ReadAll(zr)
		} else if accept == "gzip" {
			t.Errorf("accept gzip: stored body came back without Content-Encoding gzip")
		}
		if res.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Errorf("accept %q: %d, %d bytes, want 200 and the %d bytes written", accept, res.StatusCode, len(got), len(body))
		}
		if res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("accept %q: Content-Type %q, want application/json", accept, res.Header.Get("Content-Type"))
		}
		if res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("accept %q: bucket answered without CORS for any origin", accept)
		}
	}
}
