package keys_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

func TestLoadOrCreate_KeepsTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "signing.key")
	first, err := keys.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	again, err := keys.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || !again.Private.Equal(first.Private) {
		t.Fatalf("second start read %s, first made %s", again.ID, first.ID)
	}
}

func TestParse_SynapseFormat(t *testing.T) {
	// A key file as Synapse's generate_signing_key writes it.
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	text := "ed25519 a_abcd " + base64.RawStdEncoding.EncodeToString(seed) + "\n"
	k, err := keys.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != "ed25519:a_abcd" || !k.Private.Equal(ed25519.NewKeyFromSeed(seed)) {
		t.Fatalf("parsed %s with a different key", k.ID)
	}
	if k.Format() != text {
		t.Fatalf("Format() = %q, want %q", k.Format(), text)
	}
	for _, bad := range []string{"", "rsa a_x AAAA", "ed25519 a_x notbase64!", "ed25519 a_x AAAA"} {
		if _, err := keys.Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestServerKeys_SignedAndValid(t *testing.T) {
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	doc, err := keys.ServerKeys("example.org", k, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := protocol.VerifyJSON("example.org", k.ID, k.Public(), doc); err != nil {
		t.Fatalf("signature does not verify: %v", err)
	}
	var got struct {
		ServerName   string                       `json:"server_name"`
		ValidUntilTS int64                        `json:"valid_until_ts"`
		VerifyKeys   map[string]map[string]string `json:"verify_keys"`
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	if got.ServerName != "example.org" || got.ValidUntilTS != now.Add(keys.Validity).UnixMilli() {
		t.Fatalf("document = %s", doc)
	}
	pub, _ := base64.RawStdEncoding.DecodeString(got.VerifyKeys[k.ID]["key"])
	if !ed25519.PublicKey(pub).Equal(k.Public()) {
		t.Fatalf("published key differs from the signing key")
	}
	// A tampered document must fail.
	tampered := []byte(string(doc[:len(doc)-1]) + `,"x":1}`)
	if err := protocol.VerifyJSON("example.org", k.ID, k.Public(), tampered); err == nil {
		t.Fatal("tampered document verified")
	}
}

func TestFromSeed_Derivation(t *testing.T) {
	k, err := keys.FromSeed("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("correct horse battery staple"))
	if !bytes.Equal(k.Private.Seed(), seed[:]) {
		t.Fatal("the seed is not SHA-256 of the secret")
	}
	id := sha256.Sum256([]byte("keyidcorrect horse battery staple"))
	if want := "ed25519:a_" + base64.RawURLEncoding.EncodeToString(id[:])[:4]; k.ID != want {
		t.Fatalf("key ID = %q, want %q", k.ID, want)
	}
	again, _ := keys.FromSeed("correct horse battery staple")
	if again.ID != k.ID || !bytes.Equal(again.Private, k.Private) {
		t.Fatal("the same secret gave another key")
	}
	other, _ := keys.FromSeed("another secret")
	if bytes.Equal(other.Private, k.Private) {
		t.Fatal("another secret gave the same key")
	}
	// The derived key survives the file format, as any other key does.
	parsed, err := keys.Parse(k.Format())
	if err != nil || parsed.ID != k.ID || !bytes.Equal(parsed.Private, k.Private) {
		t.Fatalf("round trip through the file format: %v", err)
	}
	if _, err := keys.FromSeed(""); err == nil {
		t.Fatal("an empty seed was accepted")
	}
}
