package media_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// uploadEvent is a POST /_matrix/media/v3/upload of body as API Gateway's
// HTTP API hands it to the function: the body in base64, the headers a
// browser client sends.
func uploadEvent(token string, body []byte) events.APIGatewayV2HTTPRequest {
	const path = "/_matrix/media/v3/upload"
	query := "filename=" + strings.Repeat("holiday-photo-", 8) + ".jpg"
	ua := "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	return events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "ANY /_matrix/media/{proxy+}", RawPath: path, RawQueryString: query,
		Headers: map[string]string{
			"authorization": "Bearer " + token, "content-type": "image/jpeg", "content-length": strconv.Itoa(len(body)),
			"host": "matrix.example.org", "user-agent": ua, "accept": "application/json",
			"accept-encoding": "gzip, deflate, br, zstd", "accept-language": "it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7",
			"origin": "https://app.element.io", "referer": "https://app.element.io/",
			"sec-ch-ua":        `"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"`,
			"sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": `"Linux"`, "sec-fetch-dest": "empty",
			"sec-fetch-mode": "cors", "sec-fetch-site": "cross-site",
			"x-amzn-trace-id": "Root=1-67a1b2c3-0123456789abcdef01234567",
			"x-forwarded-for": "203.0.113.9", "x-forwarded-port": "443", "x-forwarded-proto": "https",
		},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			AccountID: "123456789012", APIID: "abcdef1234", DomainName: "matrix.example.org", DomainPrefix: "matrix",
			RequestID: "Jx1aQhKgIAMEb0A=", RouteKey: "ANY /_matrix/media/{proxy+}", Stage: "$default",
			Time: "05/Dec/2026:04:12:01 +0000", TimeEpoch: 1796443921000,
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: path, Protocol: "HTTP/1.1",
				SourceIP: "203.0.113.9", UserAgent: ua},
		},
		Body: base64.StdEncoding.EncodeToString(body), IsBase64Encoded: true,
	}
}

// TestLambda_UploadLimit: the largest upload m.upload.size advertises fits
// in a Lambda request event with the headers of a browser, arrives whole
// through the API Gateway adapter and is taken; one byte more also reaches
// the function and is 413 M_TOO_LARGE, which the client can read.
func TestLambda_UploadLimit(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_LAMBDA_RESPONSE_LIMIT=6291456")
	alice := st.Register(t, "alice")
	handler := lambdahttp.Handler(st.Server.ClientHandler())
	data := bytes.Repeat([]byte{0xFF, 0xD8, 0x00}, config.MaxLambdaUpload/3+1)
	for _, tc := range []struct {
		name    string
		size    int
		status  int
		errcode string
	}{
		{"max", config.MaxLambdaUpload, 200, ""},
		{"max+1", config.MaxLambdaUpload + 1, 413, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := uploadEvent(alice.AccessToken, data[:tc.size])
			doc, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			if len(doc) > config.LambdaPayloadLimit {
				t.Fatalf("the event of a %d byte upload is %d bytes, over Lambda's %d", tc.size, len(doc), config.LambdaPayloadLimit)
			}
			t.Logf("%d byte upload: a %d byte event, %d to spare", tc.size, len(doc), config.LambdaPayloadLimit-len(doc))
			res, err := handler(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.status || (tc.errcode != "" && !strings.Contains(res.Body, tc.errcode)) {
				t.Fatalf("status %d %s, want %d %s", res.StatusCode, res.Body, tc.status, tc.errcode)
			}
			if tc.status != 200 {
				return
			}
			// The file comes back through the function whole, in base64
			// within the 6 MB, or by a redirect when the client allows it.
			var up struct {
				ContentURI string `json:"content_uri"`
			}
			json.Unmarshal([]byte(res.Body), &up)
			u := mustMXC(t, up.ContentURI)
			get := uploadEvent(alice.AccessToken, nil)
			get.Body, get.IsBase64Encoded, get.RawQueryString = "", false, ""
			get.RawPath = "/_matrix/client/v1/media/download/" + u.Homeserver + "/" + u.FileID
			get.RequestContext.HTTP.Method, get.RequestContext.HTTP.Path = "GET", get.RawPath
			delete(get.Headers, "content-type")
			delete(get.Headers, "content-length")
			down, _ := handler(context.Background(), get)
			body, err := base64.StdEncoding.DecodeString(down.Body)
			if down.StatusCode != 200 || !down.IsBase64Encoded || err != nil || !bytes.Equal(body, data[:tc.size]) {
				t.Fatalf("download through the function: %d, base64 %v, %d bytes; want 200 and the %d uploaded", down.StatusCode, down.IsBase64Encoded, len(body), tc.size)
			}
			get.RawQueryString = "allow_redirect=true"
			if down, _ := handler(context.Background(), get); down.StatusCode != 307 || down.Headers["Location"] == "" {
				t.Errorf("download with allow_redirect: %d, Location %q; want 307", down.StatusCode, down.Headers["Location"])
			}
		})
	}
}
