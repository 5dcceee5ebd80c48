package events

// MatchIndexed reports whether an event of type typ sent by sender in
// roomID passes the filter's types, senders and rooms: what an index item
// holds, so that an index reader drops the events the filter refuses before
// loading them. Match still decides on the event itself (contains_url).
func (f *RoomEventFilter) MatchIndexed(roomID, typ, sender string) bool {
	if f == nil {
		return true
	}
	return f.matchType(typ) && included(f.Senders, f.NotSenders, sender) && included(f.Rooms, f.NotRooms, roomID)
}
