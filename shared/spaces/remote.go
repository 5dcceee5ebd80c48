package spaces

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

const (
	// maxRemoteAsks caps the federation requests one hierarchy page makes,
	// so that a space of many remote children answers within API
	// Gateway's 30 s: the rest wait for the next page.
	maxRemoteAsks = 10
	// remoteTimeout bounds one request to another server.
	remoteTimeout = 5 * time.Second
)

// remoteHierarchy is another server's answer to GET
// /_matrix/federation/v1/hierarchy/{roomId}.
type remoteHierarchy struct {
	Room         hierarchyRoom `json:"room"`
	Children     []room        `json:"children"`
	Inaccessible []string      `json:"inaccessible_children"`
}

// remotes holds what one hierarchy page learnt from other servers: the
// rooms described in full (with their children), those known from a
// parent's answer only, and the children their servers said this server
// may not see.
type remotes struct {
	full         map[string]*hierarchyRoom
	summary      map[string]room
	inaccessible map[string]bool
	asks         int
}

func newRemotes() *remotes {
	return &remotes{full: map[string]*hierarchyRoom{}, summary: map[string]room{}, inaccessible: map[string]bool{}}
}

// remoteRoom describes a room this server does not hold, as the servers
// of via (the child event's, or the room ID's server) tell: from a
// parent's answer when the room is no space or its children are not
// wanted (leaf), else from its own. ok is false when no server told.
func (s *Service) remoteRoom(ctx context.Context, rs *remotes, st step, leaf, suggested bool) (hierarchyRoom, bool) {
	if r, ok := rs.full[st.room]; ok {
		if r == nil {
			return hierarchyRoom{}, false // asked already, in vain
		}
		return *r, true
	}
	if r, ok := rs.summary[st.room]; ok && (leaf || r.RoomType != "m.space") {
		return hierarchyRoom{room: r, ChildrenState: []child{}}, true
	}
	if s.Client == nil || rs.inaccessible[st.room] {
		return hierarchyRoom{}, false
	}
	for _, server := range st.via {
		if server == s.ServerName || rs.asks >= maxRemoteAsks {
			continue
		}
		rs.asks++
		h, err := s.askHierarchy(ctx, server, st.room, suggested)
		if err != nil {
			s.log().Info("remote hierarchy failed", "room", st.room, "server", server, "err", err)
			continue
		}
		rs.full[st.room] = &h.Room
		for _, c := range h.Children {
			if rooms.ValidRoomID(c.RoomID) {
				rs.summary[c.RoomID] = c
			}
		}
		for _, id := range h.Inaccessible {
			rs.inaccessible[id] = true
		}
		return h.Room, true
	}
	rs.full[st.room] = nil
	return hierarchyRoom{}, false
}

// outOfAsks reports whether describing st would take a request that the
// page has no more of.
func (rs *remotes) outOfAsks(s *Service, st step, leaf bool) bool {
	if rs.asks < maxRemoteAsks || s.Client == nil || rs.inaccessible[st.room] {
		return false
	}
	if _, ok := rs.full[st.room]; ok {
		return false
	}
	if r, ok := rs.summary[st.room]; ok && (leaf || r.RoomType != "m.space") {
		return false
	}
	return slices.ContainsFunc(st.via, func(server string) bool { return server != s.ServerName })
}

// askHierarchy sends GET /_matrix/federation/v1/hierarchy/{roomId} to
// server and checks its answer: the room asked for, its children_state
// the m.space.child events that name a child (the suggested ones with
// suggested), in the spec's order.
func (s *Service) askHierarchy(ctx context.Context, server, roomID string, suggested bool) (remoteHierarchy, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout)
	defer cancel()
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID)
	if suggested {
		path += "?suggested_only=true"
	}
	var h remoteHierarchy
	if err := s.Client.Get(ctx, server, path, &h); err != nil {
		return h, err
	}
	if h.Room.RoomID != roomID {
		return h, errAnswer("the answer describes room " + h.Room.RoomID)
	}
	kept := []child{}
	for _, c := range h.Room.ChildrenState {
		if c.Type != "m.space.child" || !rooms.ValidRoomID(c.StateKey) {
			continue
		}
		if c, ok := childContent(c); ok && (c.suggested || !suggested) {
			kept = append(kept, c)
		}
	}
	sortChildren(kept)
	h.Room.ChildrenState = kept
	return h, nil
}

type errAnswer string

func (e errAnswer) Error() string { return "remote hierarchy: " + string(e) }

// childContent reads the order, suggested flag and via list of c's
// content, a child event held here (childOf) or one another server gave;
// ok is false when it names no child.
func childContent(c child) (child, bool) {
	var content struct {
		Via       any `json:"via"`
		Order     any `json:"order"`
		Suggested any `json:"suggested"`
	}
	if json.Unmarshal(c.Content, &content) != nil || !validVia(content.Via) {
		return child{}, false
	}
	c.order, _ = content.Order.(string)
	if !validOrder(c.order) {
		c.order = ""
	}
	c.suggested, _ = content.Suggested.(bool)
	c.via = viaOf(content.Via)
	return c, true
}

// viaOf is a valid via list as strings.
func viaOf(via any) []string {
	list, _ := via.([]any)
	out := make([]string, 0, len(list))
	for _, v := range list {
		out = append(out, v.(string))
	}
	return out
}

// summaryOf is what the viewer's rule reads of a room another server
// described. A server that does not say the room's version is taken at
// its word for the join rule, as of the current version.
func summaryOf(r room) rooms.Summary {
	sum := rooms.Summary{WorldReadable: r.WorldReadable, Allow: r.AllowedRoomIDs}
	sum.RoomID, sum.JoinRule, sum.Version, sum.RoomType = r.RoomID, r.JoinRule, r.RoomVersion, r.RoomType
	if sum.Version == "" {
		sum.Version = events.DefaultVersion
	}
	return sum
}

// serverOfRoomID is the server part of a room ID of versions before 12,
// where a server to ask for a room this server does not hold can be
// found; none for a version 12 room ID.
func serverOfRoomID(roomID string) []string {
	if _, server, ok := strings.Cut(roomID, ":"); ok && server != "" {
		return []string{server}
	}
	return nil
}

// sortChildren orders child events as the spec's "Ordering of children
// within a space" does.
func sortChildren(cs []child) {
	slices.SortFunc(cs, func(a, b child) int {
		switch {
		case before(a, b):
			return -1
		case before(b, a):
			return 1
		}
		return 0
	})
}
