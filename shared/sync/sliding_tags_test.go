package sync_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestSliding_TagFilters: tags keeps the rooms with any of its tags,
// not_tags drops those with any of its tags and wins over tags; a tag set
// during the connection moves the room between lists.
func TestSliding_TagFilters(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	fav, work, both, plain := ssRoomOf(t, alice, "fav"), ssRoomOf(t, alice, "work"), ssRoomOf(t, alice, "both"), ssRoomOf(t, alice, "plain")
	// Tags are set as the m.tag room account data that the tags
	// endpoints write.
	tags := map[string]map[string]any{}
	tag := func(room, name string) {
		t.Helper()
		if tags[room] == nil {
			tags[room] = map[string]any{}
		}
		tags[room][name] = map[string]any{"order": 0.5}
		path := "/_matrix/client/v3/user/" + url.PathEscape(au.ID) + "/rooms/" + url.PathEscape(room) + "/account_data/m.tag"
		if r := st.Do(t, "PUT", path, au.AccessToken, map[string]any{"tags": tags[room]}); r.Status != http.StatusOK {
			t.Fatalf("tag %s: %d %s", name, r.Status, r.Raw)
		}
	}
	tag(fav.String(), "m.favourite")
	tag(work.String(), "u.work")
	tag(both.String(), "m.favourite")
	tag(both.String(), "u.work")
	list := func(filters map[string]any) map[string]any {
		return map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1, "required_state": [][]string{}, "filters": filters}
	}
	body := map[string]any{"lists": map[string]any{
		"favs":     list(map[string]any{"tags": []string{"m.favourite"}}),
		"not_work": list(map[string]any{"tags": []string{"m.favourite"}, "not_tags": []string{"u.work"}}),
		"untagged": list(map[string]any{"not_tags": []string{"m.favourite", "u.work"}}),
	}}
	ids := func(r ssResp, name string) []string {
		t.Helper()
		l := r.Lists[name]
		if len(l.Ops) != 1 {
			t.Fatalf("list %s: %+v", name, l)
		}
		out := slices.Clone(l.Ops[0].RoomIDs)
		slices.Sort(out)
		return out
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	first := ssSlide(t, st.URL, ssUnstable, au, "", 0, body)
	if got, want := ids(first, "favs"), sorted(fav.String(), both.String()); !slices.Equal(got, want) {
		t.Fatalf("tags [m.favourite]: %v, want %v", got, want)
	}
	if got, want := ids(first, "not_work"), sorted(fav.String()); !slices.Equal(got, want) {
		t.Fatalf("tags [m.favourite] not_tags [u.work]: %v, want %v", got, want)
	}
	if got, want := ids(first, "untagged"), sorted(plain.String()); !slices.Equal(got, want) {
		t.Fatalf("not_tags [m.favourite, u.work]: %v, want %v", got, want)
	}
	tag(plain.String(), "m.favourite")
	next := ssSlide(t, st.URL, ssUnstable, au, first.Pos, 0, body)
	if got, want := ids(next, "favs"), sorted(fav.String(), both.String(), plain.String()); !slices.Equal(got, want) {
		t.Fatalf("after tagging plain: tags [m.favourite]: %v, want %v", got, want)
	}
	if got := ids(next, "untagged"); len(got) != 0 {
		t.Fatalf("after tagging plain: untagged %v, want none", got)
	}
}
