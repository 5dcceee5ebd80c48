package federation

import (
	"encoding/json"
	"testing"
)

// TestACLContentAllows applies server ACL contents in the order the spec's
// m.room.server_acl definition gives, ports ignored, globs case-insensitive.
func TestACLContentAllows(t *testing.T) {
	tests := []struct {
		content string
		server  string
		want    bool
	}{
		{`{"allow":["*"]}`, "example.org", true},
		{`{"allow":["*"]}`, "example.org:8448", true},
		{`{}`, "example.org", false},
		{`{"allow":[]}`, "example.org", false},
		{`{"allow":["*"],"deny":["evil.com"]}`, "evil.com", false},
		{`{"allow":["*"],"deny":["evil.com"]}`, "evil.com:1234", false},
		{`{"allow":["*"],"deny":["evil.com"]}`, "EVIL.com", false},
		{`{"allow":["*"],"deny":["evil.com"]}`, "notevil.com", true},
		{`{"allow":["*"],"deny":["*.evil.com"]}`, "a.b.evil.com", false},
		{`{"allow":["*"],"deny":["*.evil.com"]}`, "evil.com", true},
		{`{"allow":["?.example.org"]}`, "a.example.org", true},
		{`{"allow":["?.example.org"]}`, "ab.example.org", false},
		{`{"allow":["*.Example.ORG"]}`, "matrix.example.org", true},
		{`{"allow":["example.org"],"deny":["example.org"]}`, "example.org", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "127.0.0.1:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "example.org", true},
		{`{"allow":["*"],"allow_ip_literals":true}`, "127.0.0.1:8448", true},
		{`{"allow":["*"],"allow_ip_literals":"no"}`, "127.0.0.1", true},
		{`{"allow":["127.0.0.1"]}`, "127.0.0.1:33333", true},
		{`{"allow":["[::1]"]}`, "[::1]:8448", true},
		{`{"allow":"*"}`, "example.org", false},
		{`{"allow":[1,"example.org"]}`, "example.org", true},
		{`{"allow":["*"],"deny":[null,"evil.com"]}`, "evil.com", false},
	}
	for _, tc := range tests {
		if got := ACLContentAllows(json.RawMessage(tc.content), tc.server); got != tc.want {
			t.Errorf("ACL %s for %s: got %v, want %v", tc.content, tc.server, got, tc.want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acb", false},
		{"*.org", "example.org", true},
		{"**", "x", true},
		{"?", "é", true},
		{"ex?mple.*", "example.org", true},
	}
	for _, tc := range tests {
		if got := glob(tc.pattern, tc.s); got != tc.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}
