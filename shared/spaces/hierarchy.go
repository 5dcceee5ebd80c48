package spaces

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

const (
	// maxLimit caps the rooms of one page, and is the default: Synapse's
	// figure.
	maxLimit = 50
	// maxVisits caps the rooms one page reads, shown or not, so that a
	// space of rooms the user may not see costs no more than a full page.
	maxVisits = 2 * maxLimit
	// sessionTTL is how long a next_batch token stays good, as in Synapse.
	sessionTTL = 5 * time.Minute
	// maxSessionBytes bounds the room IDs a session keeps, far below the
	// 400 KB of an item: a walk that grows past it (some 4,000 rooms)
	// ends there.
	maxSessionBytes = 200_000
)

// hierarchyQuery is what GET /hierarchy asks. maxDepth is -1 for no limit.
type hierarchyQuery struct {
	root      string
	suggested bool
	maxDepth  int
	limit     int
	from      string
}

// hierarchyRoom is one room of a hierarchy page.
type hierarchyRoom struct {
	room
	ChildrenState []child `json:"children_state"`
}

type hierarchyPage struct {
	Rooms     []hierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// session is where a walk stopped: the item a next_batch token names. The
// walk's parameters are kept to refuse a token used with others.
type session struct {
	PK        string `dynamodbav:"pk"` // hierarchy|<token>
	SK        string `dynamodbav:"sk"` // hierarchy
	User      string `dynamodbav:"user"`
	Root      string `dynamodbav:"root"`
	Suggested bool   `dynamodbav:"suggested"`
	MaxDepth  int    `dynamodbav:"max_depth"`
	// Queue is the walk's stack, "<depth>|<room ID>" or, with the servers
	// to ask for a room held elsewhere, "<depth>|<room ID>|<server>,...";
	// the next room last.
	Queue []string `dynamodbav:"queue,omitempty"`
	// Done lists the rooms already walked, shown or not.
	Done    []string `dynamodbav:"done,omitempty"`
	Expires int64    `dynamodbav:"expires_at"`
}

func sessionKey(token string) store.Key {
	return store.Key{PK: "hierarchy|" + token, SK: "hierarchy"}
}

// step is one room still to walk, at its depth below the root, with the
// servers to ask for it when this server does not hold it.
type step struct {
	room  string
	depth int
	via   []string
}

// hierarchy walks the space tree below q.root depth first, as GET
// /hierarchy pages it: each room once, the children of a room in the
// spec's order right after it. A room the user may not see is left out
// with what lies below it; its child event still shows in its parent's
// children_state. The root itself they must be able to see.
func (s *Service) hierarchy(ctx context.Context, userID string, q hierarchyQuery) (hierarchyPage, error) {
	ms, err := s.Rooms.Memberships(ctx, userID)
	if err != nil {
		return hierarchyPage{}, err
	}
	v := newViewer(userID, ms)
	// The spec answers 403 for a room that does not exist too.
	forbidden := httpapi.Forbidden("you may not see room %s, or it is not known to this server", q.root)
	root := step{room: q.root, via: serverOfRoomID(q.root)}
	rs := newRemotes()
	read := summaries{}
	rootSum, err := s.Rooms.Summary(ctx, q.root)
	switch {
	case errors.Is(err, rooms.ErrUnknownRoom):
		// A space held elsewhere: its room ID's server (versions before
		// 12) is asked.
		r, ok := s.remoteRoom(ctx, rs, root, false, q.suggested)
		if !ok || !v.sees(summaryOf(r.room)) {
			return hierarchyPage{}, forbidden
		}
		read[q.root] = nil
	case err != nil:
		return hierarchyPage{}, err
	case !v.sees(rootSum):
		return hierarchyPage{}, forbidden
	default:
		read[q.root] = &rootSum
	}
	queue, done := []step{root}, map[string]bool{}
	if q.from != "" {
		if queue, done, err = s.resume(ctx, userID, q); err != nil {
			return hierarchyPage{}, err
		}
	}
	page := hierarchyPage{Rooms: []hierarchyRoom{}}
	for visits := 0; len(queue) > 0 && len(page.Rooms) < q.limit && visits < maxVisits; {
		next := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if done[next.room] {
			continue
		}
		done[next.room] = true
		visits++
		if err := s.fetch(ctx, read, []string{next.room}); err != nil {
			return hierarchyPage{}, err
		}
		if read[next.room] == nil && rs.outOfAsks(s, next, q.maxDepth >= 0 && next.depth >= q.maxDepth) {
			// Held elsewhere, and this page may ask no more: the next
			// page starts with it.
			delete(done, next.room)
			queue = append(queue, next)
			break
		}
		var entry hierarchyRoom
		if sum := read[next.room]; sum != nil {
			if !v.sees(*sum) {
				continue
			}
			entry = hierarchyRoom{room: describe(*sum), ChildrenState: []child{}}
			if sum.RoomType == "m.space" {
				if entry.ChildrenState, err = s.children(ctx, sum.RoomID, q.suggested); err != nil {
					return hierarchyPage{}, err
				}
			}
		} else {
			// Held elsewhere: as the servers of its via list describe
			// it, if any does and the user may see it.
			leaf := q.maxDepth >= 0 && next.depth >= q.maxDepth
			r, ok := s.remoteRoom(ctx, rs, next, leaf, q.suggested)
			if !ok || !v.sees(summaryOf(r.room)) {
				continue
			}
			entry = r
		}
		page.Rooms = append(page.Rooms, entry)
		if q.maxDepth >= 0 && next.depth >= q.maxDepth {
			continue
		}
		var ahead []string
		// Pushed in reverse, so the first child is walked next.
		for i := len(entry.ChildrenState) - 1; i >= 0; i-- {
			if c := entry.ChildrenState[i]; rooms.ValidRoomID(c.StateKey) && !done[c.StateKey] && !rs.inaccessible[c.StateKey] {
				id := c.StateKey
				queue = append(queue, step{room: id, depth: next.depth + 1, via: c.via})
				ahead = append(ahead, id)
			}
		}
		// The children walked next are read together, as many as this
		// page may still show.
		slices.Reverse(ahead)
		ahead = ahead[:min(len(ahead), q.limit-len(page.Rooms), maxVisits-visits)]
		if err := s.fetch(ctx, read, ahead); err != nil {
			return hierarchyPage{}, err
		}
	}
	queue = slices.DeleteFunc(queue, func(st step) bool { return done[st.room] })
	if len(queue) > 0 {
		token, err := s.save(ctx, userID, q, queue, done)
		if err != nil {
			return hierarchyPage{}, err
		}
		page.NextBatch = token
	}
	return page, nil
}

// summaries holds the rooms a page has read; nil for a room the server
// does not hold.
type summaries map[string]*rooms.Summary

// fetch reads the summaries of the rooms not read yet, in one call.
func (s *Service) fetch(ctx context.Context, read summaries, roomIDs []string) error {
	var missing []string
	for _, id := range roomIDs {
		if _, ok := read[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	got, err := s.Rooms.Summaries(ctx, missing)
	if err != nil {
		return err
	}
	for _, id := range missing {
		if sum, ok := got[id]; ok {
			read[id] = &sum
		} else {
			read[id] = nil
		}
	}
	return nil
}

// children lists the space's child events that name a child, in the
// spec's order; with suggested, only the suggested ones, as Synapse does.
func (s *Service) children(ctx context.Context, roomID string, suggested bool) ([]child, error) {
	evs, err := s.Rooms.SpaceChildren(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := []child{}
	for _, ev := range evs {
		if c, ok := childOf(ev); ok && (c.suggested || !suggested) {
			out = append(out, c)
		}
	}
	sortChildren(out)
	return out, nil
}

// resume reads the session q.from names; one of another user, root,
// suggested_only or max_depth is refused as the spec says.
func (s *Service) resume(ctx context.Context, userID string, q hierarchyQuery) ([]step, map[string]bool, error) {
	bad := httpapi.InvalidParam("unknown pagination token, or suggested_only or max_depth changed")
	raw, err := base64.RawURLEncoding.DecodeString(q.from)
	if err != nil || len(raw) != tokenBytes {
		return nil, nil, bad
	}
	var sess session
	if err := s.Store.Get(ctx, sessionKey(q.from), &sess); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, bad
		}
		return nil, nil, fmt.Errorf("read hierarchy session: %w", err)
	}
	if sess.User != userID || sess.Root != q.root || sess.Suggested != q.suggested || sess.MaxDepth != q.maxDepth {
		return nil, nil, bad
	}
	queue := make([]step, 0, len(sess.Queue))
	for _, e := range sess.Queue {
		d, rest, _ := strings.Cut(e, "|")
		id, via, _ := strings.Cut(rest, "|")
		depth, err := strconv.Atoi(d)
		if err != nil {
			return nil, nil, fmt.Errorf("hierarchy session: bad queue entry %q", e)
		}
		st := step{room: id, depth: depth}
		if via != "" {
			st.via = strings.Split(via, ",")
		}
		queue = append(queue, st)
	}
	done := make(map[string]bool, len(sess.Done))
	for _, id := range sess.Done {
		done[id] = true
	}
	return queue, done, nil
}

const tokenBytes = 16

// save stores where the walk stopped under a new random token, good for
// sessionTTL. A walk too large to keep ends: "" and no error.
func (s *Service) save(ctx context.Context, userID string, q hierarchyQuery, queue []step, done map[string]bool) (string, error) {
	var b [tokenBytes]byte
	rand.Read(b[:])
	token := base64.RawURLEncoding.EncodeToString(b[:])
	k := sessionKey(token)
	sess := session{
		PK: k.PK, SK: k.SK, User: userID, Root: q.root, Suggested: q.suggested, MaxDepth: q.maxDepth,
		Expires: s.now().Add(sessionTTL).Unix(),
	}
	size := 0
	for _, st := range queue {
		e := strconv.Itoa(st.depth) + "|" + st.room
		if len(st.via) > 0 {
			e += "|" + strings.Join(st.via, ",")
		}
		sess.Queue = append(sess.Queue, e)
		size += len(e)
	}
	for id := range done {
		sess.Done = append(sess.Done, id)
		size += len(id)
	}
	if size > maxSessionBytes {
		return "", nil
	}
	if err := s.Store.Put(ctx, sess); err != nil {
		return "", fmt.Errorf("save hierarchy session: %w", err)
	}
	return token, nil
}
