package rooms

import (
	"fmt"
	"strconv"
	"strings"
)

// The items of a room. docs/storage.md describes each with what it costs.
//
// A room's partition is room|<room ID>. Its timeline is one slot item per
// event, ev|<position>, in the order the server accepted them; the last slot
// is the room's head and holds the forward extremities. Appending claims the
// next slot with a conditional write, so two senders can never both extend
// the same head: the loser reads the new head and builds again.

// slot is an event at its position in the room, stored as the complete signed
// PDU so that federation can serve it unchanged.
type slot struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	EventID string `dynamodbav:"id"`
	PDU     string `dynamodbav:"pdu"`
	// Version is the room version, needed to parse the PDU.
	Version string `dynamodbav:"v"`
	// Ext are the forward extremities after this event, when they are not
	// just this event (a linear append, the usual case, stores nothing).
	Ext []string `dynamodbav:"ext,omitempty"`
	// Depth is the greatest depth among Ext.
	Depth int64 `dynamodbav:"d,omitempty"`
	// StateSeq is the position of the snapshot of the room's current state
	// once this event was appended: its own position for a state event (or
	// an event that changed the current state by merging forks), else the
	// last such event's. On the linear timeline this is also the state after
	// the event itself.
	StateSeq int64 `dynamodbav:"ss"`
	// Resolved marks an event received on a fork at which resolving the
	// forks changed current state other than by the event itself: what
	// clients cannot take from the timeline (/sync sends it as state).
	Resolved bool `dynamodbav:"rs,omitempty"`
	// Blocks are the block hashes of the state after this event itself, when
	// that is not the snapshot at StateSeq: an event received on a fork.
	Blocks []string `dynamodbav:"b,omitempty"`
	// RedactedBy is the redaction that applies to this event.
	RedactedBy string `dynamodbav:"rb,omitempty"`
	// Txn is "<device ID>|<transaction ID>" of the request that sent it, so
	// that the sending device is told its transaction ID back.
	Txn string `dynamodbav:"txn,omitempty"`
	// Hold marks the slot at the first position of a gap (gap.go): it holds
	// a copy of the event above the gap, which no reader shows, so that
	// appending after a stale head fails there as at any taken position.
	// The gap's last event to be placed takes it over.
	Hold bool `dynamodbav:"hold,omitempty"`
	// PrevContent is the content of the state this state event replaced,
	// which clients are shown as unsigned.prev_content.
	PrevContent string `dynamodbav:"pc,omitempty"`
}

func slotKey(roomID string, seq int64) (string, string) {
	return roomPK(roomID), slotSK(seq)
}

func roomPK(roomID string) string { return "room|" + roomID }

// Positions are zero-padded so that sort keys order like numbers.
func slotSK(seq int64) string { return fmt.Sprintf("ev|%012d", seq) }

const slotPrefix = "ev|"

func seqOf(sk string) (int64, error) {
	return strconv.ParseInt(strings.TrimPrefix(sk, slotPrefix), 10, 64)
}

// pointer finds an event by its ID alone, as federation asks for it. For
// an event received from another server it is the primary record, created
// conditionally: it decides that the event is stored once. An event kept
// out of the timeline (rejected or soft failed) has no slot: the pointer
// holds it whole, with the state before it.
type pointer struct {
	PK     string `dynamodbav:"pk"` // event|<event ID>
	SK     string `dynamodbav:"sk"` // event
	RoomID string `dynamodbav:"room"`
	Seq    int64  `dynamodbav:"seq"`
	// Status is "rejected" or "soft_failed" for an event outside the
	// timeline (Seq 0), with Reason saying why.
	Status  string `dynamodbav:"st,omitempty"`
	Reason  string `dynamodbav:"why,omitempty"`
	PDU     string `dynamodbav:"pdu,omitempty"`
	Version string `dynamodbav:"v,omitempty"`
	// Blocks are the block hashes of the state before the event.
	Blocks []string `dynamodbav:"b,omitempty"`
}

func pointerPK(eventID string) string { return "event|" + eventID }

// current is one piece of the room's current state.
type current struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"` // state|<type>␀<state key>
	EventID string `dynamodbav:"id"`
	Seq     int64  `dynamodbav:"seq"`
	PDU     string `dynamodbav:"pdu"`
	Version string `dynamodbav:"v"`
	// Membership is set on member events, so member lists filter cheaply.
	Membership string `dynamodbav:"m,omitempty"`
}

const statePrefix = "state|"

// State keys may hold any character, so a NUL separates type from key.
func stateSK(evType, stateKey string) string { return statePrefix + evType + "\x00" + stateKey }

func tupleOf(sk string) (string, string) {
	t, k, _ := strings.Cut(strings.TrimPrefix(sk, statePrefix), "\x00")
	return t, k
}

// snapshot is the room state after the state event at its position, as the
// hashes of stateBuckets blocks. Blocks are content-addressed, so a state
// change writes one new block and shares the others with earlier snapshots.
type snapshot struct {
	PK     string   `dynamodbav:"pk"`
	SK     string   `dynamodbav:"sk"` // snap|<position>
	Blocks []string `dynamodbav:"b"`
}

func snapSK(seq int64) string { return fmt.Sprintf("snap|%012d", seq) }

// block maps "type␀state key" to event ID for the state in one bucket, or
// in a part of one (a leaf); or it lists the blocks of the 4 parts of a
// larger bucket or part (an index: blocks.go).
type block struct {
	PK       string            `dynamodbav:"pk"`
	SK       string            `dynamodbav:"sk"` // blk|<hash>
	Entries  map[string]string `dynamodbav:"e,omitempty"`
	Children []string          `dynamodbav:"c,omitempty"`
	N        int               `dynamodbav:"n,omitempty"` // entries under an index
	// top is the hash of the bucket's top block, for blocksOf's callers:
	// the blocks under a top block that is stored are stored.
	top string
}

// info is the room's summary: what the directory lists and the history of
// its history visibility, kept in step with state events.
type info struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"` // info
	Version  string `dynamodbav:"v"`
	Creator  string `dynamodbav:"creator"`
	Created  int64  `dynamodbav:"created"`
	Name     string `dynamodbav:"name,omitempty"`
	Topic    string `dynamodbav:"topic,omitempty"`
	Avatar   string `dynamodbav:"avatar,omitempty"`
	Alias    string `dynamodbav:"alias,omitempty"`
	JoinRule string `dynamodbav:"join_rule,omitempty"`
	Guests   bool   `dynamodbav:"guests,omitempty"`
	RoomType string `dynamodbav:"room_type,omitempty"`
	Joined   int64  `dynamodbav:"joined"`
	// Visibility lists "<position>:<history visibility>" as it changed.
	Visibility []string `dynamodbav:"hv,omitempty"`
	// VisibilityAt lists "<position>:<before>:<after>", the history
	// visibility in the state before and after the event at a position
	// where Visibility does not give it: an event received on a fork
	// (statevis.go).
	VisibilityAt []string `dynamodbav:"hvx,omitempty"`
	// Public rooms carry gsi1 keys: the directory lists them with one index
	// query, ordered by member count.
	GSI1PK string `dynamodbav:"gsi1pk,omitempty"`
	GSI1SK string `dynamodbav:"gsi1sk,omitempty"`
	// Gaps lists "<top>:<bottom>", the open gaps of the timeline (gap.go):
	// the event at position top lacks prev_events, which are to take the
	// positions above bottom and below top. Holds are the positions of the
	// slots that hold a gap's first position (slot.Hold).
	Gaps  []string `dynamodbav:"gaps,omitempty"`
	Holds []int64  `dynamodbav:"holds,omitempty"`
	// Gapped lists "<top>:<bottom>" of every gap opened, filled or not:
	// the events placed there are history, never news to /sync.
	Gapped []string `dynamodbav:"gapped,omitempty"`
	// Tombstoned holds the replacement room after an upgrade.
	Tombstoned string `dynamodbav:"tombstone,omitempty"`
	// Rev counts writes: appends and directory changes both read, change
	// and write back the item, each only over the revision it read.
	Rev int64 `dynamodbav:"rev"`
}

const infoSK = "info"

// membership is a local user's relation to a room, in the user's partition:
// joined rooms are one query of it.
type membership struct {
	PK         string `dynamodbav:"pk"` // user|<user ID>
	SK         string `dynamodbav:"sk"` // room|<room ID>
	Membership string `dynamodbav:"m"`
	EventID    string `dynamodbav:"id"`
	Seq        int64  `dynamodbav:"seq"`
	// History lists "<position>:<membership>" as it changed, for history
	// visibility.
	History []string `dynamodbav:"h"`
	// At lists "<position>:<before>:<after>", the membership in the
	// state before and after the event at a position where History does
	// not give it: an event received on a fork (statevis.go).
	At []string `dynamodbav:"hx,omitempty"`
	// Forgotten hides a left room from the user.
	Forgotten bool `dynamodbav:"forgotten,omitempty"`
}

func userPK(userID string) string { return "user|" + userID }

const membershipPrefix = "room|"

// locals lists the room's local users who receive its events in their
// sync streams, with their membership: the joined, and the invited and
// knocking, who see their own membership change. Written with the member
// events that change it; read, and cached, by every append.
//
// Users is left out when empty: the embedded DynamoDB stores an empty map
// as a string, which no read of the item could decode (readLocals also
// reads items written so).
type locals struct {
	PK    string            `dynamodbav:"pk"`
	SK    string            `dynamodbav:"sk"` // locals
	Users map[string]string `dynamodbav:"u,omitempty"`
	// Partial lists the servers in the room when a local user joined it
	// with partial state (partial.go), until its member state is loaded;
	// nil for a room whose state is whole.
	Partial []string `dynamodbav:"partial,omitempty"`
}

const localsSK = "locals"

// joined lists the local users who are joined.
func (l *locals) joined() []string {
	var out []string
	for u, m := range l.Users {
		if m == "join" {
			out = append(out, u)
		}
	}
	return out
}

// txn records the event a client's transaction ID produced, so that a retry
// gets the same event back. It is written by a conditional create, never
// after a read, so that one transaction ID stores one event however many
// requests carry it (txn.go).
type txn struct {
	PK      string `dynamodbav:"pk"` // txn|<user>|<device>
	SK      string `dynamodbav:"sk"` // <room>|<txn ID>, <room>|redact|<txn ID>
	EventID string `dynamodbav:"id"`
	Expires int64  `dynamodbav:"expires_at"`
	// RoomID and Seq say where a message is to go: its record is created
	// before its slot is claimed, and the event is stored once that slot
	// holds it. Zero when written in one transaction with the event, which
	// is then stored.
	RoomID string `dynamodbav:"room,omitempty"`
	Seq    int64  `dynamodbav:"seq,omitempty"`
	// At is when the record was last written (Unix ms), for a record that
	// names a slot: one that names no stored event and was not renewed for
	// txnLease is taken over. Zero on records of an older layout.
	At int64 `dynamodbav:"at,omitempty"`
	// tag is the slot's Txn for the event this transaction sends.
	tag string
}

// transitions are "<position>:<value>" entries in ascending position order;
// at returns the value in force at position seq.
func at(transitions []string, seq int64) string {
	val := ""
	for _, t := range transitions {
		p, v, _ := strings.Cut(t, ":")
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n > seq {
			break
		}
		val = v
	}
	return val
}

func transition(seq int64, v string) string { return strconv.FormatInt(seq, 10) + ":" + v }
