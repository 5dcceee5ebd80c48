package rooms

import (
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/events"
)

// maxCachedRooms bounds the rooms a process keeps the head of; past it, an
// arbitrary idle entry is dropped and read again when next needed.
const maxCachedRooms = 4096

// roomCache holds, per room, the head and the state this process last
// appended after. An entry is only a guess: every append still claims its
// slot with a conditional write, and a failed claim resets the entry.
type roomCache struct {
	mu    sync.Mutex
	rooms map[string]*roomEntry
}

type roomEntry struct {
	mu     sync.Mutex
	head   *head
	state  map[events.StateKeyTuple]events.PDU
	locals *locals
}

// reset forgets the entry: the head and state are read again, together.
func (e *roomEntry) reset() { e.head, e.state, e.locals = nil, nil, nil }

func (c *roomCache) entry(roomID string) *roomEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rooms == nil {
		c.rooms = map[string]*roomEntry{}
	}
	if e, ok := c.rooms[roomID]; ok {
		return e
	}
	if len(c.rooms) >= maxCachedRooms {
		for id, e := range c.rooms {
			if e.mu.TryLock() {
				delete(c.rooms, id)
				e.mu.Unlock()
				break
			}
		}
	}
	e := &roomEntry{}
	c.rooms[roomID] = e
	return e
}
