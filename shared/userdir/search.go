package userdir

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Bounds on the work of one search.
const (
	// maxScanned bounds the word items one search reads: a one-letter
	// search on a large server stops there, and says it was limited.
	maxScanned = 1000
	// scanPage is the items asked of each index Query page.
	scanPage = 250
	// maxChecked bounds the candidates whose rooms one search reads to
	// learn whether the searcher may see them.
	maxChecked = 100
)

// Result is one user found.
type Result struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// Results is the answer of a search: the best matches first, and whether
// there were more than the limit.
type Results struct {
	Results []Result `json:"results"`
	Limited bool     `json:"limited"`
}

// candidate is a user whose words match every search word.
type candidate struct {
	Result
	score int
}

// Search finds at most limit users the searcher may see whose names match
// term: each word of the term begins a word of the user's localpart,
// server name or display name, ignoring case. Cost: one index Query (more
// pages for a short, common word), then, unless search_all_users, one
// Query of the searcher's rooms, one of each candidate's rooms in rank
// order until limit+1 are found, and one BatchGetItem of room info items
// for the rooms not shared.
func (s *Service) Search(ctx context.Context, searcher, term string, limit int) (Results, error) {
	out := Results{Results: []Result{}}
	words := searchWords(term)
	if !s.Enabled || len(words) == 0 {
		return out, nil
	}
	cands, truncated, err := s.candidates(ctx, words)
	if err != nil {
		return out, err
	}
	if s.SearchAllUsers {
		// As Synapse: everyone but the searcher.
		for _, c := range cands {
			if c.UserID != searcher {
				out.Results = append(out.Results, c.Result)
			}
		}
		return cut(out, limit, truncated), nil
	}
	v := &visibility{s: s, searcher: searcher, public: map[string]bool{}}
	checked := 0
	for _, c := range cands {
		if len(out.Results) > limit {
			break
		}
		if checked == maxChecked {
			truncated = true
			break
		}
		checked++
		ok, err := v.sees(ctx, c.UserID)
		if err != nil {
			return Results{}, err
		}
		if ok {
			out.Results = append(out.Results, c.Result)
		}
	}
	return cut(out, limit, truncated), nil
}

func cut(r Results, limit int, truncated bool) Results {
	r.Limited = truncated || len(r.Results) > limit
	if len(r.Results) > limit {
		r.Results = r.Results[:limit]
	}
	return r
}

// candidates reads the index for the most telling word and keeps the users
// whose names match every word, best first: more words matched whole, then
// those with a display name, then with an avatar, then by user ID.
func (s *Service) candidates(ctx context.Context, words []string) ([]candidate, bool, error) {
	servers := serverWords(s.ServerName)
	query := queryWord(words, servers)
	if r := []rune(query); len(r) > maxWordRunes {
		query = string(r[:maxWordRunes])
	}
	pk := nameKey(query, "").PK
	seen := map[string]bool{}
	var out []candidate
	scanned, cursor := 0, ""
	for {
		var page []nameItem
		next, err := s.Store.QueryPage(ctx, store.Query{PK: pk, Prefix: query, Limit: scanPage, Cursor: cursor, Eventual: true}, &page)
		if err != nil {
			return nil, false, fmt.Errorf("user directory: search %q: %w", query, err)
		}
		scanned += len(page)
		for _, it := range page {
			if seen[it.UserID] {
				continue
			}
			seen[it.UserID] = true
			if score, ok := match(words, it.UserID, it.DisplayName, servers); ok {
				out = append(out, candidate{Result: Result{UserID: it.UserID, DisplayName: it.DisplayName, AvatarURL: it.AvatarURL}, score: score})
			}
		}
		if next == "" {
			break
		}
		if scanned >= maxScanned {
			sortCandidates(out)
			return out, true, nil
		}
		cursor = next
	}
	sortCandidates(out)
	return out, false, nil
}

func sortCandidates(cs []candidate) {
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if (a.DisplayName != "") != (b.DisplayName != "") {
			return a.DisplayName != ""
		}
		if (a.AvatarURL != "") != (b.AvatarURL != "") {
			return a.AvatarURL != ""
		}
		return a.UserID < b.UserID
	})
}

// queryWord picks the word whose index Query reads: the longest, since a
// longer prefix reads fewer items, that is not only a piece of this
// server's name, which is not indexed (every local user has it).
func queryWord(words, servers []string) string {
	best := ""
	for _, w := range words {
		if !beginsAny(w, servers) && len(w) > len(best) {
			best = w
		}
	}
	if best != "" {
		return best
	}
	for _, w := range words {
		if len(w) > len(best) {
			best = w
		}
	}
	return best
}

// match reports whether every search word begins one of the user's words,
// and scores it: two for a word matched whole, one for a prefix.
func match(words []string, userID, displayName string, servers []string) (int, bool) {
	localpart, server, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	names := append(localpartWords(localpart), displayWords(displayName)...)
	if server != "" {
		names = append(names, serverWords(server)...)
	}
	score := 0
	for _, w := range words {
		best := 0
		for _, n := range names {
			if n == w {
				best = 2
				break
			}
			if strings.HasPrefix(n, w) {
				best = 1
			}
		}
		if best == 0 {
			return 0, false
		}
		score += best
	}
	return score, true
}

func beginsAny(w string, names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, w) {
			return true
		}
	}
	return false
}

// visibility decides whom a searcher may find, reading the searcher's
// rooms once and each room's publicness at most once.
type visibility struct {
	s        *Service
	searcher string
	mine     map[string]bool // nil until read
	public   map[string]bool
	known    map[string]bool // rooms whose publicness was read
}

// sees reports whether the searcher may find user: one who shares a
// joined room with the searcher, or is joined to a public room. The
// searcher finds themselves only through a public room, as in Synapse,
// which records no room shared with oneself.
func (v *visibility) sees(ctx context.Context, user string) (bool, error) {
	if v.mine == nil {
		rooms, err := v.s.JoinedRooms(ctx, v.searcher)
		if err != nil {
			return false, fmt.Errorf("user directory: rooms of %s: %w", v.searcher, err)
		}
		v.mine = make(map[string]bool, len(rooms))
		for _, r := range rooms {
			v.mine[r] = true
		}
		v.known = map[string]bool{}
	}
	rooms, err := v.s.JoinedRooms(ctx, user)
	if err != nil {
		return false, fmt.Errorf("user directory: rooms of %s: %w", user, err)
	}
	var unknown []string
	for _, r := range rooms {
		if v.mine[r] && user != v.searcher {
			return true, nil
		}
		if v.public[r] {
			return true, nil
		}
		if !v.known[r] {
			unknown = append(unknown, r)
		}
	}
	if len(unknown) == 0 {
		return false, nil
	}
	public, err := v.s.PublicRooms(ctx, unknown)
	if err != nil {
		return false, fmt.Errorf("user directory: %w", err)
	}
	seen := false
	for _, r := range unknown {
		v.known[r] = true
		if public[r] {
			v.public[r] = true
			seen = true
		}
	}
	return seen, nil
}
