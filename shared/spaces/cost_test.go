package spaces_test

import (
	"net/url"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCost pins what the endpoints cost in DynamoDB (docs/storage.md,
// "Spaces"). A hierarchy page: the access token, one query of the user's
// memberships, one BatchGetItem of three items for each room read (the
// children of a space read together), one query of each space's child
// events; a page with more after it writes its session, and the next page
// reads it.
func TestCost(t *testing.T) {
	st := servertest.Start(t)
	alice := st.Member(t, "alice")
	bob := st.Member(t, "bob")
	tr := makeTree(t, alice)
	if _, err := bob.JoinRoomByID(bg, tr.space); err != nil {
		t.Fatal(err)
	}
	const route = "hierarchy"
	hierarchy(t, st, bob.User, tr.space, url.Values{"max_depth": {"0"}})
	st.CheckCost(t, "the root alone", route, servertest.Want(4, 7, 0))
	// Nine rooms read (one hidden, one remote) in four BatchGetItems of 3
	// RCU a room; the child events of three spaces in three queries.
	hierarchy(t, st, bob.User, tr.space, nil)
	st.CheckCost(t, "the whole tree", route, servertest.Want(9, 33, 0))
	page, _ := hierarchy(t, st, bob.User, tr.space, url.Values{"limit": {"2"}})
	st.CheckCost(t, "a first page of two", route, servertest.Want(6, 10, 1))
	hierarchy(t, st, bob.User, tr.space, url.Values{"limit": {"2"}, "from": {page.NextBatch}})
	st.CheckCost(t, "the next page of two", route, servertest.Want(9, 14, 1))

	summaryOf(t, st, bob.User.AccessToken, "#space:example.org")
	st.CheckCost(t, "room summary by alias", "room_summary", servertest.Want(4, 6, 0))
	summaryOf(t, st, "", string(tr.a))
	st.CheckCost(t, "anonymous room summary by ID", "room_summary", servertest.Want(1, 3, 0))
}
