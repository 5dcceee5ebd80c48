package lambdahttp_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// echoed is what shared/testenv/testdata/echo answers: what its handler saw.
type echoed struct {
	Method        string `json:"method"`
	RequestURI    string `json:"requestURI"`
	Path          string `json:"path"`
	EscapedPath   string `json:"escapedPath"`
	RawQuery      string `json:"rawQuery"`
	Host          string `json:"host"`
	RemoteAddr    string `json:"remoteAddr"`
	Authorization string `json:"authorization"`
	Cookie        string `json:"cookie"`
	RequestID     string `json:"requestID"`
	Body          string `json:"body"`
	ContentLength int64  `json:"contentLength"`
	Env           string `json:"env"`
	AccessKeyID   string `json:"accessKeyID"`
}

// TestStart_UnderEmulator runs a function built on Start under the Lambda
// runtime interface emulator, as Lambda runs it, so the whole round trip is
// real: JSON event in, the aws-lambda-go runtime, the adapter, a net/http
// handler, JSON response out. The request URI must arrive exactly as sent.
func TestStart_UnderEmulator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a function and the Lambda runtime interface emulator")
	}
	// A developer's credentials must not reach the function.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIADEVELOPERSOWNKEY")
	bootstrap := testenv.BuildBootstrap(t, "./shared/testenv/testdata/echo")
	url := testenv.StartRIE(t, bootstrap, []string{"ECHO_ENV=passed"})

	invoke := func(t *testing.T, ev events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
		t.Helper()
		payload, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var res events.APIGatewayV2HTTPResponse
		out := testenv.Invoke(t, url, payload)
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("response %s: %v", out, err)
		}
		return res
	}

	tests := []struct {
		name string
		edit func(ev *events.APIGatewayV2HTTPRequest)
		want echoed
	}{
		{
			name: "SignedFederationRequest",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RequestContext.HTTP.Method = "PUT"
				ev.RawPath = "/_matrix/federation/v1/send/t%2F1%40x"
				ev.RequestContext.HTTP.Path = "/_matrix/federation/v1/send/t/1@x"
				ev.RawQueryString = "a=%2F&b=c+d&b=%40"
				ev.Headers["authorization"] = xMatrix
				ev.Headers["content-type"] = "application/json"
				ev.Body = base64.StdEncoding.EncodeToString([]byte(`{"origin":"remote.example","pdus":[]}`))
				ev.IsBase64Encoded = true
			},
			want: echoed{
				Method:        "PUT",
				RequestURI:    "/_matrix/federation/v1/send/t%2F1%40x?a=%2F&b=c+d&b=%40",
				Path:          "/_matrix/federation/v1/send/t/1@x",
				EscapedPath:   "/_matrix/federation/v1/send/t%2F1%40x",
				RawQuery:      "a=%2F&b=c+d&b=%40",
				Authorization: xMatrix,
				Body:          `{"origin":"remote.example","pdus":[]}`,
				ContentLength: 37,
			},
		},
		{
			name: "EncodedRoomAndUserIDs",
			edit: func(ev *events.APIGatewayV2HTTPRequest) {
				ev.RawPath = "/_matrix/client/v3/rooms/%21room%3Aexample.org/state/m.room.member/%40alice%3Aexample.org"
				ev.RequestContext.HTTP.Path = "/_matrix/client/v3/rooms/!room:example.org/state/m.room.member/@alice:example.org"
				ev.Cookies = []string{"a=1", "b=2"}
			},
			want: echoed{
				Method:      "GET",
				RequestURI:  "/_matrix/client/v3/rooms/%21room%3Aexample.org/state/m.room.member/%40alice%3Aexample.org",
				Path:        "/_matrix/client/v3/rooms/!room:example.org/state/m.room.member/@alice:example.org",
				EscapedPath: "/_matrix/client/v3/rooms/%21room%3Aexample.org/state/m.room.member/%40alice%3Aexample.org",
				Cookie:      "a=1; b=2",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := baseEvent()
			tc.edit(&ev)
			res := invoke(t, ev)
			if res.StatusCode != 200 || res.IsBase64Encoded || res.Headers["Content-Type"] != "application/json" {
				t.Fatalf("got status %d, base64 %v, headers %v, want a 200 JSON text body", res.StatusCode, res.IsBase64Encoded, res.Headers)
			}
			if want := []string{"echo=1; Path=/"}; !slices.Equal(res.Cookies, want) {
				t.Errorf("cookies: got %q, want %q", res.Cookies, want)
			}
			var got echoed
			if err := json.Unmarshal([]byte(res.Body), &got); err != nil {
				t.Fatalf("body %s: %v", res.Body, err)
			}
			want := tc.want
			want.Host, want.RemoteAddr, want.RequestID = "matrix.example.org", "203.0.113.9", "Jx1aQhKgIAMEb0A="
			want.Env, want.AccessKeyID = "passed", "testenv"
			if got != want {
				t.Errorf("handler saw\n  %+v\nwant\n  %+v", got, want)
			}
		})
	}

	t.Run("BinaryResponse", func(t *testing.T) {
		ev := baseEvent()
		ev.RawPath, ev.RequestContext.HTTP.Path = "/binary", "/binary"
		res := invoke(t, ev)
		body, err := base64.StdEncoding.DecodeString(res.Body)
		want := []byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0xfe, 0xff}
		if err != nil || !res.IsBase64Encoded || !bytes.Equal(body, want) || res.Headers["Content-Type"] != "image/png" {
			t.Fatalf("got %+v (decoded %q, %v), want image/png %q base64-encoded", res, body, err, want)
		}
	})

	// A panic ends the function process; the emulator starts it again.
	t.Run("PanicFailsInvoke", func(t *testing.T) {
		ev := baseEvent()
		ev.RawPath, ev.RequestContext.HTTP.Path = "/panic", "/panic"
		payload, _ := json.Marshal(ev)
		ft := &fatalCatcher{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			testenv.Invoke(ft, url, payload)
		}()
		<-done
		if !strings.Contains(ft.msg, "function failed") || !strings.Contains(ft.msg, "echo: asked to panic") {
			t.Fatalf("Invoke of a panicking function: got failure %q, want one naming the panic", ft.msg)
		}
	})
	// The runtime carries what the adapter returns: an answer over 6 MB
	// becomes a 500 that says why (shared/bigbody keeps answers from
	// getting there), never a failed invoke.
	t.Run("LargeResponse", func(t *testing.T) {
		ev := baseEvent()
		ev.RawPath, ev.RequestContext.HTTP.Path = "/large", "/large"
		payload, _ := json.Marshal(ev)
		out := testenv.Invoke(t, url, payload)
		var res events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("response %.200s: %v", out, err)
		}
		if len(out) > 6<<20 || res.StatusCode != 500 || !strings.Contains(res.Body, "larger than the 6 MB") {
			t.Fatalf("got %d bytes, status %d, body %.200s; want a 500 saying why", len(out), res.StatusCode, res.Body)
		}
	})
	t.Run("AnswersAfterPanic", func(t *testing.T) {
		if res := invoke(t, baseEvent()); res.StatusCode != 200 {
			t.Fatalf("got %+v, want 200", res)
		}
	})
}

// fatalCatcher records the failure Fatalf would report, instead of failing
// the test, so that a test can check that a helper fails.
type fatalCatcher struct {
	testing.TB
	msg string
}

func (f *fatalCatcher) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalCatcher) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
