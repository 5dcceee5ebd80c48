// Package userdir is the user directory: POST /user_directory/search, and
// the index of names it searches, kept up to date as users register,
// change their profile and are deactivated.
//
// Storage (docs/storage.md): each word of a user's names (the localpart,
// its parts, the words of the display name), lower-cased, is an item
// (userdir|<first character>, <word>|<user ID>) that carries the user's
// display name and avatar URL, so that a search word is one Query with
// begins_with on the sort key and needs no profile reads. The item
// (user|<user ID>, userdir) lists the words indexed for the user and a
// revision: every change of the index reads it and writes it back over the
// revision it read, in one transaction with the word items, so that two
// concurrent profile changes never leave a stale word behind.
//
// Who is found follows Synapse: users who share a room with the searcher or
// sit in a public room (join rule public or history world_readable), or
// with search_all_users every local user but the searcher. Deactivated users
// are never indexed.
package userdir

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service is the user directory of one server.
type Service struct {
	Store      *store.Store
	ServerName string
	// Enabled is user_directory.enabled: off, every search finds no one.
	Enabled bool
	// SearchAllUsers is user_directory.search_all_users: every local user
	// is found, not only those who share a room with the searcher or sit in
	// a public room.
	SearchAllUsers bool
	// JoinedRooms lists the rooms a local user is joined to
	// (rooms.Service.JoinedRooms).
	JoinedRooms func(ctx context.Context, userID string) ([]string, error)
	// PublicRooms tells which rooms show their members to everyone
	// (rooms.Service.PublicRooms).
	PublicRooms func(ctx context.Context, roomIDs []string) (map[string]bool, error)
	// Profile reads a local user's display name and avatar URL, for a user
	// reactivated by an admin (profile.Service.Names).
	Profile func(ctx context.Context, userID string) (displayName, avatarURL string, err error)
}

// Limits that keep one user's index within one transaction and within
// DynamoDB's key sizes.
const (
	// maxWords bounds the words indexed for one user: with the user's
	// item, the puts of the new words and the deletes of the old ones stay
	// under a transaction's 100 actions.
	maxWords = 48
	// maxWordRunes bounds a word in a sort key; longer words are indexed
	// by their beginning, and matched whole in memory.
	maxWordRunes = 64
)

const (
	namePrefix = "userdir|"
	entrySK    = "userdir"
	// updateAttempts is how often an index change is tried again after a
	// concurrent one won the race for the user's item.
	updateAttempts = 8
)

// nameItem is one word of one user's names.
type nameItem struct {
	PK          string `dynamodbav:"pk"`
	SK          string `dynamodbav:"sk"`
	UserID      string `dynamodbav:"user_id"`
	DisplayName string `dynamodbav:"displayname,omitempty"`
	AvatarURL   string `dynamodbav:"avatar_url,omitempty"`
}

// entryItem lists what is indexed for one user.
type entryItem struct {
	PK    string   `dynamodbav:"pk"`
	SK    string   `dynamodbav:"sk"`
	Words []string `dynamodbav:"words,omitempty"`
	// Deactivated users are out of the index, and stay out when their
	// profile changes.
	Deactivated bool  `dynamodbav:"deactivated,omitempty"`
	Rev         int64 `dynamodbav:"rev"`
}

func entryKey(userID string) store.Key { return store.Key{PK: "user|" + userID, SK: entrySK} }

func nameKey(word, userID string) store.Key {
	r, _ := utf8.DecodeRuneInString(word)
	return store.Key{PK: namePrefix + string(r), SK: word + "|" + userID}
}

// NewUserOps are the writes that index a new user, for the transaction
// that registers them (accounts.Service.NewUserOps): their words and the
// user's item, which must not exist yet.
func (s *Service) NewUserOps(userID, displayName string) ([]store.Op, error) {
	displayName = strings.TrimSpace(displayName) // as the profile stores it
	words := indexWords(userID, displayName)
	ops := make([]store.Op, 0, len(words)+1)
	for _, w := range words {
		k := nameKey(w, userID)
		ops = append(ops, store.PutOp(nameItem{PK: k.PK, SK: k.SK, UserID: userID, DisplayName: displayName}))
	}
	k := entryKey(userID)
	return append(ops, store.CreateOp(entryItem{PK: k.PK, SK: k.SK, Words: words, Rev: 1})), nil
}

// ProfileChanged indexes a local user's new display name and avatar URL
// (profile.Service.Changed): one read of the user's item, then one
// transaction that puts every word item (they carry the names) and deletes
// the words no longer there. A deactivated user stays out.
func (s *Service) ProfileChanged(ctx context.Context, userID, displayName, avatarURL string) error {
	return s.update(ctx, userID, func(e *entryItem) bool {
		return !e.Deactivated
	}, func() (string, string, error) { return displayName, avatarURL, nil })
}

// ActiveChanged takes a deactivated user out of the index, or puts a
// reactivated one back with their current profile
// (accounts.Service.ActiveChanged).
func (s *Service) ActiveChanged(ctx context.Context, userID string, active bool) error {
	if !active {
		return s.update(ctx, userID, func(e *entryItem) bool {
			e.Deactivated = true
			return false
		}, nil)
	}
	return s.update(ctx, userID, func(e *entryItem) bool {
		e.Deactivated = false
		return true
	}, func() (string, string, error) {
		if s.Profile == nil {
			return "", "", nil
		}
		return s.Profile(ctx, userID)
	})
}

// update reads the user's item, lets decide change it and say whether the
// user is indexed, and rewrites the word items from names (none when not
// indexed), all over the revision read; a lost race is tried again.
func (s *Service) update(ctx context.Context, userID string, decide func(*entryItem) bool, names func() (string, string, error)) error {
	for range updateAttempts {
		k := entryKey(userID)
		e := entryItem{PK: k.PK, SK: k.SK}
		err := s.Store.Get(ctx, k, &e)
		found := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("user directory: read %s: %w", userID, err)
		}
		old, rev := e.Words, e.Rev
		indexed := decide(&e)
		var ops []store.Op
		e.Words = nil
		if indexed {
			display, avatar, err := names()
			if err != nil {
				return fmt.Errorf("user directory: profile of %s: %w", userID, err)
			}
			e.Words = indexWords(userID, display)
			for _, w := range e.Words {
				nk := nameKey(w, userID)
				ops = append(ops, store.PutOp(nameItem{PK: nk.PK, SK: nk.SK, UserID: userID, DisplayName: display, AvatarURL: avatar}))
			}
		}
		kept := make(map[string]bool, len(e.Words))
		for _, w := range e.Words {
			kept[w] = true
		}
		for _, w := range old {
			if !kept[w] {
				ops = append(ops, store.DeleteOp(nameKey(w, userID)))
			}
		}
		e.Rev = rev + 1
		if found {
			ops = append(ops, store.PutIfOp(e, "rev", rev))
		} else {
			ops = append(ops, store.CreateOp(e))
		}
		err = s.Store.Transact(ctx, ops...)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("user directory: index %s: %w", userID, err)
		}
		return nil
	}
	return fmt.Errorf("user directory: index %s: %w after %d attempts", userID, store.ErrConflict, updateAttempts)
}

// indexWords are the words a user is found by, as sort keys hold them:
// lower-cased, cut to maxWordRunes, without words that begin another of the
// user's words (a prefix search finds that one), at most maxWords of them.
// The server name is left out: every local user has it.
func indexWords(userID, displayName string) []string {
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	all := append(localpartWords(localpart), displayWords(displayName)...)
	var out []string
	seen := map[string]bool{}
	for _, w := range all {
		if r := []rune(w); len(r) > maxWordRunes {
			w = string(r[:maxWordRunes])
		}
		if w != "" && !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	var kept []string
	for _, w := range out {
		covered := false
		for _, o := range out {
			if o != w && strings.HasPrefix(o, w) {
				covered = true
				break
			}
		}
		if !covered && len(kept) < maxWords {
			kept = append(kept, w)
		}
	}
	return kept
}

// localpartWords are the localpart whole and its parts between
// punctuation: alice.smith gives alice.smith, alice and smith.
func localpartWords(localpart string) []string {
	localpart = strings.ToLower(localpart)
	return append([]string{localpart}, strings.FieldsFunc(localpart, notAlnum)...)
}

// displayWords are the words of a display name between spaces, trimmed of
// punctuation at their ends (Jean-Luc, gives jean-luc), and their parts
// between punctuation (jean, luc).
func displayWords(name string) []string {
	var out []string
	for _, f := range strings.Fields(strings.ToLower(name)) {
		if w := strings.TrimFunc(f, notAlnum); w != "" {
			out = append(out, w)
		}
		out = append(out, strings.FieldsFunc(f, notAlnum)...)
	}
	return out
}

// serverWords are the words of a server name: whole and its parts
// (example.org:8448 gives example.org:8448, example, org and 8448).
func serverWords(server string) []string {
	server = strings.ToLower(server)
	return append([]string{server}, strings.FieldsFunc(server, notAlnum)...)
}

// searchWords splits a search term into the words that must each begin one
// of a user's words: on spaces, "@" and ":" (so a user ID is its localpart
// and server name), trimmed of punctuation at their ends; at most ten, as
// Synapse takes.
func searchWords(term string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(strings.ToLower(term), func(r rune) bool {
		return unicode.IsSpace(r) || r == '@' || r == ':'
	}) {
		if w := strings.TrimFunc(f, notAlnum); w != "" && len(out) < 10 {
			out = append(out, w)
		}
	}
	return out
}

func notAlnum(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }
