package accounts_test

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
)

// TestHashPassword_Forms: short passwords get plain bcrypt, as Synapse's,
// long ones passlib's bcrypt_sha256, in which every byte counts; over 512
// bytes nothing is hashed.
func TestHashPassword_Forms(t *testing.T) {
	for _, tc := range []struct {
		name, password, prefix string
	}{
		{"short", "hunter2", "$2a$12$"},
		{"72 bytes", strings.Repeat("p", 72), "$2a$12$"},
		{"73 bytes", strings.Repeat("p", 73), "$bcrypt-sha256$v=2,t=2b,r=12$"},
		{"512 bytes", strings.Repeat("é", 256), "$bcrypt-sha256$v=2,t=2b,r=12$"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := accounts.HashPassword(tc.password)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(h, tc.prefix) {
				t.Fatalf("hash %q, want the prefix %q", h, tc.prefix)
			}
			if !accounts.CheckPassword(h, tc.password) {
				t.Fatalf("%q does not verify", h)
			}
			// Changing the last byte changes the result: all of it counts.
			other := tc.password[:len(tc.password)-1] + "x"
			if accounts.CheckPassword(h, other) {
				t.Fatalf("%q verifies a password that differs in its last byte", h)
			}
		})
	}
	if _, err := accounts.HashPassword(strings.Repeat("p", 513)); err == nil {
		t.Fatal("a 513-byte password was hashed")
	}
}

// TestCheckPassword_Synapse: a hash Synapse made (Python's bcrypt of the
// first 72 bytes, in the $2b$ form) verifies with the whole password, as
// Synapse checks it, and with nothing shorter.
func TestCheckPassword_Synapse(t *testing.T) {
	long := strings.Repeat("0123456789", 10) // 100 bytes
	h, err := bcrypt.GenerateFromPassword([]byte(long[:72]), 4)
	if err != nil {
		t.Fatal(err)
	}
	synapse := "$2b$" + string(h[4:])
	if !accounts.CheckPassword(synapse, long) {
		t.Fatal("Synapse's hash of a 100-byte password does not verify")
	}
	if accounts.CheckPassword(synapse, long[:71]) {
		t.Fatal("71 bytes of it verify")
	}
	if accounts.CheckPassword("not a hash", long) || accounts.CheckPassword("$bcrypt-sha256$v=2,t=2b,r=12$short$x", long) {
		t.Fatal("a malformed hash verified")
	}
}

// TestCheckPassword_Passlib verifies a hash that passlib made (hashcat's
// example of mode 30601): the long form is the one other tools know.
func TestCheckPassword_Passlib(t *testing.T) {
	for _, tc := range []struct{ hash, password string }{
		{"$bcrypt-sha256$v=2,t=2b,r=12$KSOjON/ciJR86a00N5q61.$AmWZucQuHk13FGkQWhgMeiFvBfm2GCy", "hashcat"},
	} {
		if !accounts.CheckPassword(tc.hash, tc.password) {
			t.Errorf("%s does not verify %q", tc.hash, tc.password)
		}
		if accounts.CheckPassword(tc.hash, tc.password+"!") {
			t.Errorf("%s verifies a wrong password", tc.hash)
		}
	}
}
