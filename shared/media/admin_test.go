package media_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// admin registers a server admin and returns their access token.
func admin(t *testing.T, st *servertest.Stack) string {
	t.Helper()
	s, err := st.Server.Accounts.Register(context.Background(), accounts.NewUser{Localpart: "root", Password: "pw", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	return s.AccessToken
}

// clock is a settable clock for the media service: uploads get distinct,
// ordered times without waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func contentKeys(t *testing.T, st *servertest.Stack) []string {
	t.Helper()
	keys, err := st.Server.Media.Objects.(*objects.Bucket).List(context.Background(), "content/")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

type userMedia struct {
	Media []struct {
		MediaID       string  `json:"media_id"`
		MediaType     string  `json:"media_type"`
		MediaLength   int64   `json:"media_length"`
		UploadName    *string `json:"upload_name"`
		CreatedTS     int64   `json:"created_ts"`
		QuarantinedBy *string `json:"quarantined_by"`
	} `json:"media"`
	NextToken *int64 `json:"next_token"`
	Total     int    `json:"total"`
}

func listMedia(t *testing.T, st *servertest.Stack, token, userID, query string) userMedia {
	t.Helper()
	a := do(t, "GET", st.URL+"/_synapse/admin/v1/users/"+userID+"/media"+query, token, "", nil)
	var out userMedia
	if a.Status != 200 || json.Unmarshal(a.Body, &out) != nil {
		t.Fatalf("list media %s: %d %s", query, a.Status, a.Body)
	}
	return out
}

func ids(m userMedia) []string {
	var out []string
	for _, x := range m.Media {
		out = append(out, x.MediaID)
	}
	return out
}

// TestAdmin_UserMedia: an admin pages through a user's media, newest
// first by default and oldest first with dir=f; a user who is not an admin
// is refused with 403 M_FORBIDDEN.
func TestAdmin_UserMedia(t *testing.T) {
	st := servertest.Start(t)
	root := admin(t, st)
	alice := st.Member(t, "alice")
	c := &clock{t: time.Now()}
	st.Server.Media.Now = c.now
	var uploaded []string
	for i := range 3 {
		uri := upload(t, st, alice.User.AccessToken, "text/plain", fmt.Sprintf("f%d.txt", i), []byte(fmt.Sprintf("file %d", i)))
		uploaded = append(uploaded, mustMXC(t, uri).FileID)
	}
	newest := []string{uploaded[2], uploaded[1], uploaded[0]}

	first := listMedia(t, st, root, alice.User.ID, "?limit=2")
	st.CheckCost(t, "list a user's media", "GET /_synapse/admin/v1/users/", servertest.Want(3, 2.5, 0))
	if first.Total != 3 || !slices.Equal(ids(first), newest[:2]) || first.NextToken == nil || *first.NextToken != 2 {
		t.Fatalf("first page: %+v, want %v of 3 and next_token 2", first, newest[:2])
	}
	if m := first.Media[0]; m.MediaType != "text/plain" || m.MediaLength != 6 || m.UploadName == nil || *m.UploadName != "f2.txt" || m.QuarantinedBy != nil || m.CreatedTS == 0 {
		t.Errorf("newest media: %+v", m)
	}
	second := listMedia(t, st, root, alice.User.ID, fmt.Sprintf("?limit=2&from=%d", *first.NextToken))
	if second.Total != 3 || !slices.Equal(ids(second), newest[2:]) || second.NextToken != nil {
		t.Fatalf("second page: %+v, want %v and no next_token", second, newest[2:])
	}
	if f := listMedia(t, st, root, alice.User.ID, "?order_by=created_ts&dir=f"); !slices.Equal(ids(f), uploaded) {
		t.Errorf("dir=f: %v, want %v", ids(f), uploaded)
	}
	if a := do(t, "GET", st.URL+"/_synapse/admin/v1/users/"+alice.User.ID+"/media", alice.User.AccessToken, "", nil); a.Status != 403 || a.errcode() != "M_FORBIDDEN" {
		t.Errorf("list by a non-admin: %d %s, want 403 M_FORBIDDEN", a.Status, a.Body)
	}
	if a := do(t, "GET", st.URL+"/_synapse/admin/v1/users/"+alice.User.ID+"/media?order_by=media_length", root, "", nil); a.Status != 400 || a.errcode() != "M_INVALID_PARAM" {
		t.Errorf("order_by=media_length: %d %s, want 400 M_INVALID_PARAM", a.Status, a.Body)
	}
}

// TestAdmin_Delete: two media IDs of the same bytes share one object; the
// first deleted is gone (404) while the object stays for the other; the
// second deleted takes the object with it. Only admins delete.
func TestAdmin_Delete(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_FREEZE=2999-01-01")
	root := admin(t, st)
	alice := st.Member(t, "alice")
	bob := st.Register(t, "bob")
	png := images(t)["image/png"]
	a := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "a.png", png))
	b := mustMXC(t, upload(t, st, bob.AccessToken, "image/png", "b.png", png))
	// A thumbnail of a, which goes with it.
	if r := do(t, "GET", st.URL+"/_matrix/client/v1/media/thumbnail/"+a.Homeserver+"/"+a.FileID+"?width=32&height=32", alice.User.AccessToken, "", nil); r.Status != 200 {
		t.Fatalf("thumbnail of a: %d %s", r.Status, r.Body)
	}
	if keys := contentKeys(t, st); len(keys) != 1 {
		t.Fatalf("bucket holds %v, want one object for two uploads of one file", keys)
	}
	path := func(id string) string { return "/" + st.Server.Media.ServerName + "/" + id }

	if r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media"+path(a.FileID), alice.User.AccessToken, "", nil); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("delete by a non-admin: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}
	r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media"+path(a.FileID), root, "", nil)
	if r.Status != 200 || string(r.Body) != fmt.Sprintf(`{"deleted_media":[%q],"total":1}`, a.FileID) {
		t.Fatalf("delete a: %d %s", r.Status, r.Body)
	}
	st.CheckCost(t, "delete one of two references (and a thumbnail)", "DELETE /_synapse/admin/v1/media/", servertest.Want(7, 5, 5))
	for _, u := range []string{"/_matrix/client/v1/media/download", "/_matrix/media/v3/download", "/_matrix/client/v1/media/thumbnail"} {
		if g := do(t, "GET", st.URL+u+path(a.FileID)+"?width=32&height=32", alice.User.AccessToken, "", nil); g.Status != 404 || g.errcode() != "M_NOT_FOUND" {
			t.Errorf("GET %s of deleted a: %d %s, want 404 M_NOT_FOUND", u, g.Status, g.Body)
		}
	}
	if keys := contentKeys(t, st); !slices.Contains(keys, "content/sha256/"+sha(png)) {
		t.Fatalf("bucket holds %v after one of two references went, want the file kept", keys)
	}
	if g := do(t, "GET", st.URL+"/_matrix/client/v1/media/download"+path(b.FileID), bob.AccessToken, "", nil); g.Status != 200 || string(g.Body) != string(png) {
		t.Fatalf("download of b after a went: %d", g.Status)
	}
	if r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media"+path(b.FileID), root, "", nil); r.Status != 200 {
		t.Fatalf("delete b: %d %s", r.Status, r.Body)
	}
	st.CheckCost(t, "delete the last reference", "DELETE /_synapse/admin/v1/media/", servertest.Want(7, 5, 5))
	if keys := contentKeys(t, st); len(keys) != 0 {
		t.Fatalf("bucket holds %v after the last reference went, want nothing", keys)
	}
	if r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media"+path(b.FileID), root, "", nil); r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
		t.Errorf("delete again: %d %s, want 404 M_NOT_FOUND", r.Status, r.Body)
	}
	if r := do(t, "DELETE", st.URL+"/_synapse/admin/v1/media/other.example/"+b.FileID, root, "", nil); r.Status != 400 {
		t.Errorf("delete of another server's media: %d %s, want 400", r.Status, r.Body)
	}
	// The same bytes uploaded again are stored again.
	c := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "c.png", png))
	if g := do(t, "GET", st.URL+"/_matrix/client/v1/media/download"+path(c.FileID), alice.User.AccessToken, "", nil); g.Status != 200 || string(g.Body) != string(png) {
		t.Fatalf("download of the same bytes uploaded after the delete: %d", g.Status)
	}
}

// TestAdmin_DeleteBefore: POST /media/delete deletes local media uploaded
// before before_ts and larger than size_gt, keeping avatars unless
// keep_profiles=false and quarantined media always.
func TestAdmin_DeleteBefore(t *testing.T) {
	st := servertest.Start(t)
	root := admin(t, st)
	alice := st.Member(t, "alice")
	ctx := context.Background()
	c := &clock{}
	st.Server.Media.Now = c.now
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	c.set(old)
	small := mustMXC(t, upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("tiny")))
	big := mustMXC(t, upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("a larger old file")))
	avatar := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "", images(t)["image/png"]))
	quarantined := mustMXC(t, upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("a quarantined old file")))
	c.set(time.Now())
	recent := mustMXC(t, upload(t, st, alice.User.AccessToken, "text/plain", "", []byte("a recent file")))
	if err := alice.SetAvatarURL(ctx, avatar); err != nil {
		t.Fatal(err)
	}
	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/quarantine/"+quarantined.Homeserver+"/"+quarantined.FileID, root, "", nil); r.Status != 200 {
		t.Fatalf("quarantine: %d %s", r.Status, r.Body)
	}

	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/delete", root, "", nil); r.Status != 400 || r.errcode() != "M_MISSING_PARAM" {
		t.Errorf("without before_ts: %d %s, want 400 M_MISSING_PARAM", r.Status, r.Body)
	}
	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/delete?before_ts=1600000000", root, "", nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
		t.Errorf("before_ts in seconds: %d %s, want 400 M_INVALID_PARAM", r.Status, r.Body)
	}
	cutoff := old.Add(time.Hour).UnixMilli()
	deleted := func(query string) []string {
		t.Helper()
		r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/delete?"+query, root, "", nil)
		var out struct {
			Deleted []string `json:"deleted_media"`
			Total   int      `json:"total"`
		}
		if r.Status != 200 || json.Unmarshal(r.Body, &out) != nil || out.Total != len(out.Deleted) {
			t.Fatalf("delete %s: %d %s", query, r.Status, r.Body)
		}
		slices.Sort(out.Deleted)
		return out.Deleted
	}
	if got := deleted(fmt.Sprintf("before_ts=%d&size_gt=4", cutoff)); !slices.Equal(got, []string{big.FileID}) {
		t.Errorf("before_ts, size_gt=4: deleted %v, want only the larger old file %s", got, big.FileID)
	}
	want := []string{small.FileID, avatar.FileID}
	slices.Sort(want)
	if got := deleted(fmt.Sprintf("before_ts=%d&keep_profiles=false", cutoff)); !slices.Equal(got, want) {
		t.Errorf("keep_profiles=false: deleted %v, want %v (the avatar too, the quarantined file kept)", got, want)
	}
	left := listMedia(t, st, root, alice.User.ID, "?dir=f")
	if got := ids(left); !slices.Equal(got, []string{quarantined.FileID, recent.FileID}) {
		t.Errorf("left: %v, want the quarantined and the recent file", got)
	}
}

// TestAdmin_Quarantine: quarantined media is 404 to the authenticated and
// the legacy downloads and to thumbnails, until it is lifted.
func TestAdmin_Quarantine(t *testing.T) {
	st := servertest.Start(t, "CIRRUS_MEDIA_FREEZE=2999-01-01")
	root := admin(t, st)
	alice := st.Member(t, "alice")
	png := images(t)["image/png"]
	m := mustMXC(t, upload(t, st, alice.User.AccessToken, "image/png", "q.png", png))
	p := "/" + m.Homeserver + "/" + m.FileID
	gets := []string{"/_matrix/client/v1/media/download" + p, "/_matrix/media/v3/download" + p,
		"/_matrix/client/v1/media/thumbnail" + p + "?width=32&height=32", "/_matrix/media/v3/thumbnail" + p + "?width=32&height=32"}
	for _, g := range gets {
		if r := do(t, "GET", st.URL+g, alice.User.AccessToken, "", nil); r.Status != 200 {
			t.Fatalf("GET %s before quarantine: %d %s", g, r.Status, r.Body)
		}
	}
	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/quarantine"+p, alice.User.AccessToken, "", nil); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Errorf("quarantine by a non-admin: %d %s, want 403 M_FORBIDDEN", r.Status, r.Body)
	}
	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/quarantine"+p, root, "", nil); r.Status != 200 || string(r.Body) != "{}" {
		t.Fatalf("quarantine: %d %s", r.Status, r.Body)
	}
	st.CheckCost(t, "quarantine", "POST /_synapse/admin/v1/media/quarantine/", servertest.Want(4, 3, 2))
	for _, g := range gets {
		if r := do(t, "GET", st.URL+g, alice.User.AccessToken, "", nil); r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("GET %s while quarantined: %d %s, want 404 M_NOT_FOUND", g, r.Status, r.Body)
		}
	}
	if l := listMedia(t, st, root, alice.User.ID, ""); len(l.Media) != 1 || l.Media[0].QuarantinedBy == nil || *l.Media[0].QuarantinedBy != "@root:"+m.Homeserver {
		t.Errorf("listed: %+v, want quarantined_by @root", l.Media)
	}
	if r := do(t, "POST", st.URL+"/_synapse/admin/v1/media/unquarantine"+p, root, "", nil); r.Status != 200 {
		t.Fatalf("unquarantine: %d %s", r.Status, r.Body)
	}
	for _, g := range gets {
		if r := do(t, "GET", st.URL+g, alice.User.AccessToken, "", nil); r.Status != 200 {
			t.Errorf("GET %s after unquarantine: %d %s", g, r.Status, r.Body)
		}
	}

}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
