package search

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestTokens(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"words and case", "Hello, WORLD! hello", []string{"hello", "world", "hello"}},
		{"single characters dropped", "a b cd 1 22", []string{"cd", "22"}},
		{"unicode letters", "Café naïve Ärger Привет мир", []string{"café", "naïve", "ärger", "привет", "мир"}},
		{"combining marks stay in the word", "cafe\u0301 ok", []string{"cafe\u0301", "ok"}},
		{"punctuation splits", "foo-bar_baz.qux@example.org", []string{"foo", "bar", "baz", "qux", "example", "org"}},
		{"long words cut", strings.Repeat("x", 50), []string{strings.Repeat("x", maxTokenRunes)}},
		{"nothing", " ,.!? ", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokens(tc.text); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("tokens(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestParseTerms(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []term
	}{
		{"Tomatoes basil", []term{{"tomatoes", false}, {"basil", false}}},
		{"tom* tom", []term{{"tom", true}, {"tom", false}}},
		{"foo-ba* a", []term{{"foo", false}, {"ba", true}}},
		{"x tomatoes tomatoes", []term{{"tomatoes", false}}},
	} {
		if got := parseTerms(tc.text); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseTerms(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

func TestIndexBound(t *testing.T) {
	words := make([]string, 100)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	got := map[string]int{}
	for _, c := range countTokens(strings.Join(words, " ")+" w0 w0", keyBody) {
		got[c.token] = c.hits
	}
	if len(got) != maxTokens {
		t.Fatalf("%d distinct tokens indexed, want %d", len(got), maxTokens)
	}
	if got["w0"] != 3 || got["w31"] != 1 || got["w32"] != 0 {
		t.Fatalf("counts: w0 %d, w31 %d, w32 %d; want 3, 1, 0", got["w0"], got["w31"], got["w32"])
	}
}
