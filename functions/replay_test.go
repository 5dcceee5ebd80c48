package functions_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
	"github.com/cirrus-matrix/cirrus/shared/testenv"
)

// serverName is the Matrix server name the functions are configured with;
// the expectations in events/ are written for it.
const serverName = "example.org"

// expectation is what events/<function>/<name>.expect.json says the
// function answers to <name>.json. Every field is optional.
type expectation struct {
	// Status, BodyContains and Headers check an HTTP response.
	Status       int               `json:"status"`
	BodyContains []string          `json:"bodyContains"`
	Headers      map[string]string `json:"headers"`
	// BatchItemFailures lists the message IDs an SQS batch reports failed.
	BatchItemFailures []string `json:"batchItemFailures"`
	// Suppressed and NotSuppressed check the mail suppression list in the
	// table after an SES event from SNS: the addresses (lower-cased) it
	// holds and those it does not.
	Suppressed    []string `json:"suppressed"`
	NotSuppressed []string `json:"notSuppressed"`
}

// eventTypes is the Lambda event type of each folder of events/, given a
// sample: a new function or schedule adds its folder here, and its samples
// are then checked to decode into that type. The sender gets SQS batches
// and SES's mail events from SNS, told apart by their source as the
// function does.
var eventTypes = map[string]func(sample []byte) any{
	"client":     func([]byte) any { return new(events.APIGatewayV2HTTPRequest) },
	"federation": func([]byte) any { return new(events.APIGatewayV2HTTPRequest) },
	"sender": func(sample []byte) any {
		if isSNS(sample) {
			return new(events.SNSEvent)
		}
		return new(events.SQSEvent)
	},
	"schedule": func([]byte) any { return new(events.EventBridgeEvent) },
	// The sync tier's controller runs on its own schedule; it talks to
	// ECS, API Gateway and CloudWatch, so its sample is decoded, not
	// replayed (shared/synctier tests its runs).
	"tier": func([]byte) any { return new(events.EventBridgeEvent) },
}

// isSNS reports whether a sample is an SNS notification: its first
// record's source is aws:sns.
func isSNS(sample []byte) bool {
	var peek struct {
		Records []struct {
			EventSource string `json:"EventSource"`
		} `json:"Records"`
	}
	return json.Unmarshal(sample, &peek) == nil && len(peek.Records) > 0 && peek.Records[0].EventSource == "aws:sns"
}

// TestSampleEvents_Decode decodes every sample in events/ into the event
// type of the function that gets it, refusing unknown fields, so that a
// sample never drifts from what the function is given. Expectations decode
// the same way, so that a misspelt check cannot pass by being ignored.
func TestSampleEvents_Decode(t *testing.T) {
	dirs, err := os.ReadDir(filepath.Join("..", "events"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		newEvent, ok := eventTypes[d.Name()]
		if !ok {
			t.Errorf("events/%s: no event type for this folder in eventTypes", d.Name())
			continue
		}
		files, _ := filepath.Glob(filepath.Join("..", "events", d.Name(), "*.json"))
		for _, f := range files {
			name := d.Name() + "/" + filepath.Base(f)
			if strings.HasSuffix(f, ".expect.json") {
				if _, err := os.Stat(strings.TrimSuffix(f, ".expect.json") + ".json"); err != nil {
					t.Errorf("%s: no sample for this expectation", name)
				}
				var want expectation
				decodeStrict(t, f, &want)
				continue
			}
			sample, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			decodeStrict(t, f, newEvent(sample))
		}
	}
}

// TestReplayEvents builds each function as Lambda runs it, starts it under
// the Lambda runtime interface emulator with the configuration a deployment
// gives it and the embedded DynamoDB as its table, and replays every sample
// in events/<function>/ that has an expectation through it.
func TestReplayEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three functions and the Lambda runtime interface emulator")
	}
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	const table = "cirrus-replay"
	// In AWS the stack creates the table; the functions never do.
	st, err := store.Open(context.Background(), store.Options{Table: table, Endpoint: db.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	key, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"CIRRUS_SERVER_NAME=" + serverName,
		"CIRRUS_PUBLIC_BASEURL=https://matrix.example.org/",
		"CIRRUS_SIGNING_KEY=" + key.Format(),
		"CIRRUS_MAX_REQUEST_SIZE=1024", // events/client/too-large.json sends 2 KB
		"CIRRUS_DYNAMODB_TABLE=" + table,
		"DYNAMODB_ENDPOINT=" + db.URL(),
		"AWS_REGION=eu-west-1",
	}

	for _, fn := range []string{"client", "federation", "sender"} {
		t.Run(fn, func(t *testing.T) {
			t.Parallel()
			expects, _ := filepath.Glob(filepath.Join("..", "events", fn, "*.expect.json"))
			samples, _ := filepath.Glob(filepath.Join("..", "events", fn, "*.json"))
			if len(expects) == 0 {
				t.Fatalf("no samples with expectations in events/%s", fn)
			}
			if n := len(samples) - len(expects); n != len(expects) {
				t.Errorf("events/%s has %d samples and %d expectations: give every sample a <name>.expect.json", fn, n, len(expects))
			}
			url := testenv.StartRIE(t, testenv.BuildBootstrap(t, "./functions/"+fn), env)
			for _, expectPath := range expects {
				name := strings.TrimSuffix(filepath.Base(expectPath), ".expect.json")
				t.Run(name, func(t *testing.T) {
					var want expectation
					decodeStrict(t, expectPath, &want)
					payload, err := os.ReadFile(strings.TrimSuffix(expectPath, ".expect.json") + ".json")
					if err != nil {
						t.Fatal(err)
					}
					got := testenv.Invoke(t, url, payload)
					if fn == "sender" && isSNS(payload) {
						checkSuppressed(t, st, got, want)
						return
					}
					if fn == "sender" {
						checkBatch(t, got, want)
						return
					}
					body := checkHTTP(t, got, want)
					if name == "key-server" {
						checkSignature(t, body, key)
					}
				})
			}
		})
	}
}

// checkHTTP checks an API Gateway response against want and returns its
// body, decoded if base64.
func checkHTTP(t *testing.T, payload []byte, want expectation) []byte {
	t.Helper()
	var res events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(payload, &res); err != nil {
		t.Fatalf("response %s: %v", payload, err)
	}
	body := []byte(res.Body)
	if res.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(res.Body); err != nil {
			t.Fatalf("base64 body %q: %v", res.Body, err)
		}
	}
	if want.Status != 0 && res.StatusCode != want.Status {
		t.Errorf("status: got %d, want %d; body %s", res.StatusCode, want.Status, body)
	}
	for _, s := range want.BodyContains {
		if !bytes.Contains(body, []byte(s)) {
			t.Errorf("body %s: lacks %s", body, s)
		}
	}
	for k, v := range want.Headers {
		if res.Headers[k] != v {
			t.Errorf("header %s: got %q, want %q (all: %v)", k, res.Headers[k], v, res.Headers)
		}
	}
	return body
}

// checkBatch checks an SQS batch response: exactly the expected messages
// reported failed, so that only they come back.
func checkBatch(t *testing.T, payload []byte, want expectation) {
	t.Helper()
	var res events.SQSEventResponse
	if err := json.Unmarshal(payload, &res); err != nil {
		t.Fatalf("response %s: %v", payload, err)
	}
	if !bytes.Contains(payload, []byte(`"batchItemFailures"`)) {
		t.Errorf("response %s: no batchItemFailures", payload)
	}
	failed := []string{}
	for _, f := range res.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	slices.Sort(failed)
	wantFailed := slices.Sorted(slices.Values(want.BatchItemFailures))
	if wantFailed == nil {
		wantFailed = []string{}
	}
	if !slices.Equal(failed, wantFailed) {
		t.Errorf("batch item failures: got %v, want %v", failed, wantFailed)
	}
}

// checkSuppressed checks the answer to an SNS notification, none, and the
// suppression list the SES event in it left in the table.
func checkSuppressed(t *testing.T, st *store.Store, payload []byte, want expectation) {
	t.Helper()
	if string(bytes.TrimSpace(payload)) != "null" {
		t.Errorf("response %s, want null (no error)", payload)
	}
	if len(want.Suppressed)+len(want.NotSuppressed) == 0 {
		t.Fatal("expectation checks no address: set suppressed or notSuppressed")
	}
	list := &mail.Suppressions{Store: st}
	for _, addr := range want.Suppressed {
		s, found, err := list.Lookup(context.Background(), addr)
		if err != nil || !found || s.Address != addr || s.Reason == "" || s.At.IsZero() {
			t.Errorf("%s: got %+v, found %v, err %v; want it suppressed with a reason and a time", addr, s, found, err)
		}
	}
	for _, addr := range want.NotSuppressed {
		if s, found, err := list.Lookup(context.Background(), addr); err != nil || found {
			t.Errorf("%s: suppressed as %+v (err %v), want not", addr, s, err)
		}
	}
}

// checkSignature verifies the key document with the key the function was
// configured with: it published that key and signed with it.
func checkSignature(t *testing.T, body []byte, key keys.Key) {
	t.Helper()
	if err := protocol.VerifyJSON(serverName, key.ID, key.Public(), body); err != nil {
		t.Fatalf("key document %s does not verify with the configured key: %v", body, err)
	}
	var doc struct {
		VerifyKeys map[string]map[string]string `json:"verify_keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if got, want := doc.VerifyKeys[key.ID]["key"], base64.RawStdEncoding.EncodeToString(key.Public()); got != want {
		t.Fatalf("verify_keys %v: got %q for %s, want %q", doc.VerifyKeys, got, key.ID, want)
	}
}

// decodeStrict decodes the JSON file at path into v, refusing unknown
// fields and trailing data.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Errorf("%s does not decode into %T: %v", path, v, err)
		return
	}
	if dec.More() {
		t.Errorf("%s: data after the JSON value", path)
	}
}
