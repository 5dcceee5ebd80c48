package search

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// maxPerTerm bounds the index items one term reads in one room: its newest
// matches (a prefix term's, in reverse token order). Synapse likewise ranks
// at most 500 matches; a word in more messages than this is found in the
// newest of them. 1,000 items of about 200 bytes are one Query page, about
// 25 read units eventually consistent.
const maxPerTerm = 1000

// parallel bounds the reads of one search under way at once: the index
// Queries, then the visibility reads of the rooms with hits.
const parallel = 16

// maxTerms bounds the words of a search term: each is a Query per room.
const maxTerms = 16

// term is a word of the search term: its token, and whether it matches any
// token that begins with it (written "word*").
type term struct {
	token  string
	prefix bool
}

// parseTerms reads the search term: its words, tokenized as the index is;
// a word that ends in '*' matches as a prefix. Repeats are dropped.
func parseTerms(text string) []term {
	var out []term
	seen := map[term]bool{}
	for _, word := range strings.Fields(text) {
		ts := tokens(word)
		for i, t := range ts {
			tm := term{token: t, prefix: i == len(ts)-1 && strings.HasSuffix(word, "*")}
			if !seen[tm] {
				seen[tm] = true
				out = append(out, tm)
			}
		}
	}
	return out
}

// each runs f(0) to f(n-1), parallel at a time, and returns the first
// error.
func each(n int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// hit is an event that matched every term, as the index has it.
type hit struct {
	room    string
	seq     int64
	eventID string
	sender  string
	typ     string
	ts      int64
	rank    float64
	tokens  []string
}

// query is what the index is asked.
type query struct {
	terms  []term
	keys   int
	filter *events.RoomEventFilter
}

// find reads the index of each room for each term (one Query each, at most
// parallel at once) and returns the events that match every term in the
// keys asked and pass the filter's rooms, types and senders.
func (s *Service) find(ctx context.Context, roomIDs []string, q query) ([]hit, error) {
	found := make([][]map[int64]*hit, len(roomIDs))
	for i := range found {
		found[i] = make([]map[int64]*hit, len(q.terms))
	}
	n := len(q.terms)
	err := each(len(roomIDs)*n, func(i int) error {
		m, err := s.readTerm(ctx, roomIDs[i/n], q.terms[i%n], q)
		found[i/n][i%n] = m
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []hit
	for _, perTerm := range found {
		for seq, h := range perTerm[0] {
			all := true
			for _, m := range perTerm[1:] {
				other, ok := m[seq]
				if !ok {
					all = false
					break
				}
				h.rank += other.rank
				h.tokens = append(h.tokens, other.tokens...)
			}
			if all {
				out = append(out, *h)
			}
		}
	}
	return out, nil
}

// readTerm reads one term's index items in one room: the events it is in,
// each with its rank (how often the term is in it) and the tokens matched.
func (s *Service) readTerm(ctx context.Context, roomID string, t term, q query) (map[int64]*hit, error) {
	prefix := t.token
	if !t.prefix {
		prefix += "\x00"
	}
	out := map[int64]*hit{}
	cursor, read := "", 0
	for read < maxPerTerm {
		var page []entry
		next, err := s.Store.QueryPage(ctx, store.Query{
			PK: indexPK(roomID), Prefix: prefix, Descending: true,
			Limit: maxPerTerm - read, Cursor: cursor, Eventual: true,
		}, &page)
		if err != nil {
			return nil, err
		}
		read += len(page)
		for _, e := range page {
			if e.Keys&q.keys == 0 || !q.filter.MatchIndexed(roomID, e.Type, e.Sender) {
				continue
			}
			seq := e.seq()
			h := out[seq]
			if h == nil {
				h = &hit{room: roomID, seq: seq, eventID: e.EventID, sender: e.Sender, typ: e.Type, ts: e.TS}
				out[seq] = h
			}
			h.rank += float64(e.Count)
			h.tokens = append(h.tokens, e.token())
		}
		if next == "" {
			break
		}
		cursor = next
	}
	return out, nil
}

// Orders of results.
const (
	byRank   = "rank"
	byRecent = "recent"
)

// before reports whether a comes before b in the order asked: by rank then
// recency, or by recency alone; the room and position make the order total,
// so that a batch token names one place in it.
func before(a, b hit, order string) bool {
	if order == byRank && a.rank != b.rank {
		return a.rank > b.rank
	}
	if a.ts != b.ts {
		return a.ts > b.ts
	}
	if a.room != b.room {
		return a.room < b.room
	}
	return a.seq > b.seq
}

func sortHits(hs []hit, order string) {
	slices.SortFunc(hs, func(a, b hit) int {
		switch {
		case before(a, b, order):
			return -1
		case before(b, a, order):
			return 1
		}
		return 0
	})
}

// batch is a next_batch token: the last result given, and the group the
// batch is of when it came from a group.
type batch struct {
	Order string  `json:"o"`
	Rank  float64 `json:"r,omitempty"`
	TS    int64   `json:"t"`
	Room  string  `json:"m"`
	Seq   int64   `json:"s"`
	// GroupBy is "room_id" or "sender" for a group's next_batch, with the
	// group's value.
	GroupBy string `json:"g,omitempty"`
	Group   string `json:"v,omitempty"`
}

func (b batch) hit() hit { return hit{rank: b.Rank, ts: b.TS, room: b.Room, seq: b.Seq} }

func (b batch) encode() string {
	doc, _ := json.Marshal(b)
	return base64.RawURLEncoding.EncodeToString(doc)
}

func parseBatch(s string) (*batch, error) {
	if s == "" {
		return nil, nil
	}
	doc, err := base64.RawURLEncoding.DecodeString(s)
	var b batch
	if err == nil {
		err = json.Unmarshal(doc, &b)
	}
	if err != nil || (b.Order != byRank && b.Order != byRecent) || b.Room == "" ||
		(b.GroupBy != "" && b.GroupBy != "room_id" && b.GroupBy != "sender") {
		return nil, httpapi.InvalidParam("invalid next_batch %q", s)
	}
	return &b, nil
}

func batchAt(h hit, order string) batch {
	b := batch{Order: order, TS: h.ts, Room: h.room, Seq: h.seq}
	if order == byRank {
		b.Rank = h.rank
	}
	return b
}

// inGroup reports whether h belongs to the group b restricts to.
func (b *batch) inGroup(h hit) bool {
	switch {
	case b == nil || b.GroupBy == "":
		return true
	case b.GroupBy == "room_id":
		return h.room == b.Group
	}
	return h.sender == b.Group
}
