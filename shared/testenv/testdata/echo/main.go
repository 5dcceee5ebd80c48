// Command echo is a Lambda function for tests of the emulator harness and of
// the API Gateway adapter (shared/lambdahttp/emulator_test.go): it answers
// each request with what its net/http handler saw, as JSON.
//
//   - /binary answers a few PNG bytes (not UTF-8) as image/png;
//   - /panic panics, as a handler bug would;
//   - /large answers 7 MB of JSON, over what Lambda returns;
//   - anything else gets the JSON echo and a Set-Cookie header.
package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"

	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
)

// png is what /binary answers: bytes that are not valid UTF-8.
var png = []byte{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0xfe, 0xff}

// echoed is the JSON answer: what the handler saw of the request.
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
	// Env is ECHO_ENV, to check that the harness passes the environment.
	Env string `json:"env"`
	// AccessKeyID is AWS_ACCESS_KEY_ID: the harness's dummy, never the
	// developer's.
	AccessKeyID string `json:"accessKeyID"`
}

func main() {
	lambdahttp.Start(http.HandlerFunc(echo))
}

func echo(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/binary":
		w.Header().Set("Content-Type", "image/png")
		w.Write(png)
		return
	case "/panic":
		panic("echo: asked to panic")
	case "/large":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"rooms":[`))
		for i := 0; i < 7<<20/20; i++ {
			w.Write([]byte(`"!room:example.org",`))
		}
		w.Write([]byte(`""]}`))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("Set-Cookie", "echo=1; Path=/")
	json.NewEncoder(w).Encode(echoed{
		Method:        r.Method,
		RequestURI:    r.RequestURI,
		Path:          r.URL.Path,
		EscapedPath:   r.URL.EscapedPath(),
		RawQuery:      r.URL.RawQuery,
		Host:          r.Host,
		RemoteAddr:    r.RemoteAddr,
		Authorization: r.Header.Get("Authorization"),
		Cookie:        r.Header.Get("Cookie"),
		RequestID:     r.Header.Get("X-Request-Id"),
		Body:          string(body),
		ContentLength: r.ContentLength,
		Env:           os.Getenv("ECHO_ENV"),
		AccessKeyID:   os.Getenv("AWS_ACCESS_KEY_ID"),
	})
}
