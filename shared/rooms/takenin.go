package rooms

// TakenIn reports whether seq is a position in a room taken in through a
// remote join (TakeJoined), whose members from before the join were never
// appended one by one: what keeps track of members must read them once.
func TakenIn(seq int64) bool { return seq >= joinBase }
