package functions_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// expectation is what events/<function>/<name>.expect.json says the
// function answers to <name>.json.
type expectation struct {
	Status            int               `json:"status"`
	BodyContains      []string          `json:"bodyContains"`
	Headers           map[string]string `json:"headers"`
	BatchItemFailures []string          `json:"batchItemFailures"`
}

// TestReplayEvents builds each function as Lambda runs it, starts it under
// the Lambda runtime interface emulator with the configuration a deployment
// gives it, and replays every sample payload in events/ through it.
func TestReplayEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three functions and the emulator")
	}
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"CIRRUS_SERVER_NAME=example.org",
		"CIRRUS_PUBLIC_BASEURL=https://matrix.example.org/",
		"CIRRUS_SIGNING_KEY=" + key.Format(),
		"CIRRUS_MAX_REQUEST_SIZE=1024", // events/client/too-large.json sends 2 KB
		"CIRRUS_DYNAMODB_TABLE=cirrus",
		"DYNAMODB_ENDPOINT=" + db.URL(),
		"AWS_REGION=eu-west-1",
	}
	for _, fn := range []string{"client", "federation", "sender"} {
		t.Run(fn, func(t *testing.T) {
			samples, _ := filepath.Glob(filepath.Join("..", "events", fn, "*.expect.json"))
			if len(samples) == 0 {
				t.Fatalf("no samples in events/%s", fn)
			}
			url := testenv.StartRIE(t, testenv.BuildBootstrap(t, "./functions/"+fn), env)
			for _, expectPath := range samples {
				name := strings.TrimSuffix(filepath.Base(expectPath), ".expect.json")
				t.Run(name, func(t *testing.T) {
					var want expectation
					readJSON(t, expectPath, &want)
					payload, err := os.ReadFile(strings.TrimSuffix(expectPath, ".expect.json") + ".json")
					if err != nil {
						t.Fatal(err)
					}
					got := testenv.Invoke(t, url, payload)
					if fn == "sender" {
						checkBatch(t, got, want)
						return
					}
					checkHTTP(t, got, want)
					if name == "key-server" {
						checkSignature(t, got, key)
					}
				})
			}
		})
	}
}

func checkHTTP(t *testing.T, payload []byte, want expectation) {
	t.Helper()
	var res events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(payload, &res); err != nil {
		t.Fatalf("response %s: %v", payload, err)
	}
	if res.StatusCode != want.Status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, want.Status, res.Body)
	}
	for _, s := range want.BodyContains {
		if !strings.Contains(res.Body, s) {
			t.Errorf("body %s lacks %s", res.Body, s)
		}
	}
	for k, v := range want.Headers {
		if res.Headers[k] != v {
			t.Errorf("header %s = %q, want %q (all: %v)", k, res.Headers[k], v, res.Headers)
		}
	}
}

func checkBatch(t *testing.T, payload []byte, want expectation) {
	t.Helper()
	var res events.SQSEventResponse
	if err := json.Unmarshal(payload, &res); err != nil {
		t.Fatalf("response %s: %v", payload, err)
	}
	var failed []string
	for _, f := range res.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	slices.Sort(failed)
	if !slices.Equal(failed, want.BatchItemFailures) {
		t.Fatalf("batch item failures %v, want %v", failed, want.BatchItemFailures)
	}
}

// checkSignature verifies the key document with the key the function was
// configured with: the function published and signed with the right key.
func checkSignature(t *testing.T, payload []byte, key keys.Key) {
	t.Helper()
	var res events.APIGatewayV2HTTPResponse
	json.Unmarshal(payload, &res)
	if err := protocol.VerifyJSON("example.org", key.ID, key.Public(), []byte(res.Body)); err != nil {
		t.Fatalf("key document does not verify: %v", err)
	}
	var doc struct {
		VerifyKeys map[string]map[string]string `json:"verify_keys"`
	}
	json.Unmarshal([]byte(res.Body), &doc)
	if doc.VerifyKeys[key.ID]["key"] != base64.RawStdEncoding.EncodeToString(key.Public()) {
		t.Fatalf("published %v, configured %s", doc.VerifyKeys, key.ID)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
