// Package search serves server-side search (POST /search) over a token index
// written as events are appended: one small item per distinct word of each
// message body, room name and topic, kept in a partition of the room, so
// that finding a word in a room is one Query and a search never reads a
// timeline. docs/storage.md gives the index's keys and what it costs.
package search

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service indexes events and searches them.
type Service struct {
	Store *store.Store
	Rooms *rooms.Service
	// Disabled turns search off (enable_search: false): nothing is indexed
	// and /search answers 400, as Synapse does.
	Disabled bool
}

// The index. An event with searchable text writes one item per distinct
// token (up to maxTokens) in its room's index partition:
//
//	pk search|<room ID>   sk <token> NUL <position, 12 digits>
//
// A word is found in a room by one Query with the sort key prefix
// "<token> NUL", newest first; a prefix ("hel*") by the prefix "hel", which
// reads every token that begins so. The item carries what search needs to
// filter and order without loading the event.
type entry struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	EventID string `dynamodbav:"e"`
	Sender  string `dynamodbav:"s"`
	Type    string `dynamodbav:"t"`
	// Keys are the content keys the token is in, a mask of keyBody,
	// keyName and keyTopic.
	Keys int `dynamodbav:"k"`
	// Count is how often the token is in the event: its weight in the rank.
	Count int   `dynamodbav:"n"`
	TS    int64 `dynamodbav:"ts"`
}

func indexPK(roomID string) string { return "search|" + roomID }

func entrySK(token string, seq int64) string { return fmt.Sprintf("%s\x00%012d", token, seq) }

// token and seq read an entry's sort key.
func (e entry) token() string {
	t, _, _ := strings.Cut(e.SK, "\x00")
	return t
}

func (e entry) seq() int64 {
	_, s, _ := strings.Cut(e.SK, "\x00")
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// The searchable keys, as the spec names them, and the event type each is
// read from (as Synapse indexes them: the body of messages, the name and
// topic of the room).
const (
	keyBody = 1 << iota
	keyName
	keyTopic
	allKeys = keyBody | keyName | keyTopic
)

var keyNames = map[string]int{"content.body": keyBody, "content.name": keyName, "content.topic": keyTopic}

var keyOfType = map[string]struct {
	field string
	key   int
}{
	"m.room.message": {"body", keyBody},
	events.Name:      {"name", keyName},
	events.Topic:     {"topic", keyTopic},
}

// Limits of the tokenizer. A token is a run of letters, digits and marks,
// lower-cased; shorter than minTokenRunes it is dropped (single letters
// match too much to be worth an item), longer than maxTokenRunes it is cut
// (the key stays small, and a query term is cut the same way). An event
// indexes at most maxTokens distinct tokens, the first ones of its text:
// its write cost is bounded whatever its length.
const (
	minTokenRunes = 2
	maxTokenRunes = 40
	maxTokens     = 32
)

// tokens splits text into lower-cased tokens in order, repeats included.
func tokens(text string) []string {
	var out []string
	var b strings.Builder
	n := 0
	flush := func() {
		if n >= minTokenRunes {
			out = append(out, b.String())
		}
		b.Reset()
		n = 0
	}
	for _, r := range text {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) {
			if n < maxTokenRunes {
				b.WriteRune(unicode.ToLower(r))
			}
			n++
			continue
		}
		flush()
	}
	flush()
	return out
}

// counted is a token of an event with its keys and count.
type counted struct {
	token      string
	keys, hits int
}

// eventTokens is the distinct tokens of ev's searchable text, in the order
// they first appear, at most maxTokens.
func eventTokens(ev events.PDU) []counted {
	k, ok := keyOfType[ev.Type()]
	if !ok {
		return nil
	}
	var content map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &content) != nil {
		return nil
	}
	var text string
	if json.Unmarshal(content[k.field], &text) != nil || !utf8.ValidString(text) {
		return nil
	}
	return countTokens(text, k.key)
}

// IndexedWords is how many index items (and write units) a message body
// of text adds: its distinct tokens, at most maxTokens. The bench reads it
// to tell the index's writes from the room's own.
func IndexedWords(text string) int { return len(countTokens(text, 0)) }

// countTokens is the distinct tokens of text in the order they first
// appear, at most maxTokens, each counted.
func countTokens(text string, key int) []counted {
	var out []counted
	at := map[string]int{}
	for _, t := range tokens(text) {
		if i, ok := at[t]; ok {
			out[i].hits++
			continue
		}
		if len(out) == maxTokens {
			continue
		}
		at[t] = len(out)
		out = append(out, counted{token: t, keys: key, hits: 1})
	}
	return out
}

// Index writes the index items of the appended events that have searchable
// text, in BatchWriteItem calls of up to 25 items: one write unit per
// distinct token of each. It is rooms.Service.Appended's second task,
// run beside the sync fan-out; a message's items go beside its slot
// instead (Items, in the Landing hook), and an event Landed is indexed
// already. Items written for a message that lost its position to another
// event name it by ID, and search finds them only where the slot holds
// that event (rooms.SearchView.Load).
func (s *Service) Index(ctx context.Context, evs []rooms.Appended) error {
	items := s.Items(evs)
	if len(items) == 0 {
		return nil
	}
	if err := s.Store.PutMany(ctx, items); err != nil {
		return fmt.Errorf("index for search: %w", err)
	}
	return nil
}

// Items is the index items of the appended events not Landed yet: none
// when search is disabled.
func (s *Service) Items(evs []rooms.Appended) []any {
	if s.Disabled {
		return nil
	}
	var items []any
	for _, a := range evs {
		if a.Landed {
			continue
		}
		for _, c := range eventTokens(a.Event) {
			items = append(items, entry{
				PK: indexPK(a.RoomID), SK: entrySK(c.token, a.Seq),
				EventID: a.Event.EventID(), Sender: events.Sender(a.Event), Type: a.Event.Type(),
				Keys: c.keys, Count: c.hits, TS: int64(a.Event.OriginServerTS()),
			})
		}
	}
	return items
}
