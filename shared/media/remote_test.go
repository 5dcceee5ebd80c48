package media_test

import (
	"bytes"
	"context"
	"encoding/json"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// mediaPeer is a fake homeserver that serves its key and media over
// federation: multipart/mixed answers with the file or a Location part, or,
// legacy, only the deprecated /_matrix/media/v3/download (404
// M_UNRECOGNIZED on the federation path, as a server before spec v1.11).
// It counts the requests for each path.
type mediaPeer struct {
	name   string
	addr   string
	legacy bool
	files  map[string][]byte
	url    string

	mu    sync.Mutex
	asked map[string]int
}

func newMediaPeer(t *testing.T, name string, legacy bool, files map[string][]byte) *mediaPeer {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := &mediaPeer{name: name, legacy: legacy, files: files, asked: map[string]int{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.asked[r.URL.Path]++
		p.mu.Unlock()
		if r.URL.Path == "/_matrix/key/v2/server" {
			doc, _ := keys.ServerKeys(p.name, k, time.Now())
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
			return
		}
		p.serve(t, w, r)
	}))
	t.Cleanup(srv.Close)
	p.addr, p.url = srv.Listener.Addr().String(), srv.URL
	return p
}

func (p *mediaPeer) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked[path]
}

func peerError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"errcode": code, "error": code})
}

func (p *mediaPeer) serve(t *testing.T, w http.ResponseWriter, r *http.Request) {
	const fed, legacy = "/_matrix/federation/v1/media/download/", "/_matrix/media/v3/download/"
	switch {
	case strings.HasPrefix(r.URL.Path, "/files/"):
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Disposition", `inline; filename="moved.png"`)
		w.Write(p.files[strings.TrimPrefix(r.URL.Path, "/files/")])
	case strings.HasPrefix(r.URL.Path, fed) && !p.legacy:
		if !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
			peerError(w, 401, "M_UNAUTHORIZED")
			return
		}
		id := strings.TrimPrefix(r.URL.Path, fed)
		body, ok := p.files[id]
		if !ok {
			peerError(w, 404, "M_NOT_FOUND")
			return
		}
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		meta.Write([]byte("{}"))
		if strings.HasPrefix(id, "redirect") {
			mw.CreatePart(textproto.MIMEHeader{"Location": {p.url + "/files/" + id}})
		} else {
			part, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/png"}, "Content-Disposition": {`inline; filename="cat.png"`}})
			part.Write(body)
		}
		mw.Close()
	case strings.HasPrefix(r.URL.Path, fed):
		peerError(w, 404, "M_UNRECOGNIZED")
	case strings.HasPrefix(r.URL.Path, legacy+p.name+"/") && p.legacy:
		if r.URL.Query().Get("allow_remote") != "false" {
			t.Errorf("legacy download without allow_remote=false: %s", r.URL.RequestURI())
		}
		body, ok := p.files[strings.TrimPrefix(r.URL.Path, legacy+p.name+"/")]
		if !ok {
			peerError(w, 404, "M_NOT_FOUND")
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Disposition", `inline; filename="old.png"`)
		w.Write(body)
	default:
		peerError(w, 404, "M_UNRECOGNIZED")
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestRemote_Download: media of other servers comes byte for byte through
// the v1 download of a local client: from a multipart answer, through a
// Location part, and from a server that knows only the legacy endpoint;
// the second download reads the cache (the peer is not asked again);
// unknown media is 404, media over max_upload_size 502 M_TOO_LARGE (the
// spec's download answer for content too large to serve; Synapse's too),
// a server that does not answer 502 M_UNKNOWN (Synapse's "Failed to fetch
// remote media").
func TestRemote_Download(t *testing.T) {
	small := bytes.Repeat([]byte("cirrus!"), 100)
	big := bytes.Repeat([]byte("x"), 5000)
	files := map[string][]byte{"plain": small, "redirect1": append([]byte("moved "), small...), "big": big}
	peer := newMediaPeer(t, "peer.test", false, files)
	old := newMediaPeer(t, "old.test", true, map[string][]byte{"ancient": []byte("from before v1.11")})
	env := append(append([]string{}, servertest.FederationEnv...), "CIRRUS_MAX_UPLOAD_SIZE=4096",
		"CIRRUS_FEDERATION_HOSTS=peer.test="+peer.addr+",old.test="+old.addr+",down.test="+closedAddr(t))
	st := servertest.Start(t, env...)
	alice := st.Register(t, "alice")
	get := func(server, id string) answer {
		return do(t, "GET", st.URL+"/_matrix/client/v1/media/download/"+server+"/"+id, alice.AccessToken, "", nil)
	}
	for _, tc := range []struct {
		server, id, path string
		want             []byte
		ctype, name      string
		peer             *mediaPeer
	}{
		{"peer.test", "plain", "/_matrix/federation/v1/media/download/plain", small, "image/png", "cat.png", peer},
		{"peer.test", "redirect1", "/files/redirect1", files["redirect1"], "image/png", "moved.png", peer},
		{"old.test", "ancient", "/_matrix/media/v3/download/old.test/ancient", []byte("from before v1.11"), "image/png", "old.png", old},
	} {
		t.Run(tc.id, func(t *testing.T) {
			for i := range 2 {
				a := get(tc.server, tc.id)
				if a.Status != 200 || !bytes.Equal(a.Body, tc.want) || a.Header.Get("Content-Type") != tc.ctype {
					t.Fatalf("download %d: %d %s %q, want 200 %s and the peer's %d bytes", i, a.Status, a.Header.Get("Content-Type"), a.Body, tc.ctype, len(tc.want))
				}
				if cd := a.Header.Get("Content-Disposition"); !strings.Contains(cd, tc.name) {
					t.Errorf("download %d: Content-Disposition %q, want the name %s", i, cd, tc.name)
				}
				checkSafety(t, "remote download", a)
				if i == 0 {
					st.CheckCost(t, "first download of remote media", "GET /_matrix/client/v1/media/download/", servertest.Want(3, 2, 1))
				} else {
					st.CheckCost(t, "cached remote media", "GET /_matrix/client/v1/media/download/", servertest.Want(2, 2, 0))
				}
			}
			if n := tc.peer.count(tc.path); n != 1 {
				t.Errorf("the peer was asked %s %d times over two downloads, want once", tc.path, n)
			}
		})
	}
	for _, tc := range []struct {
		server, id string
		status     int
		errcode    string
	}{
		{"peer.test", "missing", 404, "M_NOT_FOUND"},
		{"old.test", "missing", 404, "M_NOT_FOUND"},
		{"peer.test", "big", 502, "M_TOO_LARGE"},
		{"down.test", "any", 502, "M_UNKNOWN"},
	} {
		if a := get(tc.server, tc.id); a.Status != tc.status || a.errcode() != tc.errcode {
			t.Errorf("%s/%s: %d %s, want %d %s", tc.server, tc.id, a.Status, a.Body, tc.status, tc.errcode)
		}
	}
	if n := peer.count("/_matrix/federation/v1/media/download/big"); n != 1 {
		t.Errorf("big file asked %d times", n)
	}
	// Quarantined, cached remote media and media not fetched yet are 404,
	// and the peer is not asked for them.
	for _, id := range []string{"plain", "never-fetched"} {
		if err := st.Server.Media.Quarantine(context.Background(), "peer.test", id, "@root:"+servertest.ServerName); err != nil {
			t.Fatal(err)
		}
		if a := get("peer.test", id); a.Status != 404 || a.errcode() != "M_NOT_FOUND" {
			t.Errorf("quarantined %s: %d %s, want 404 M_NOT_FOUND", id, a.Status, a.Body)
		}
	}
	if n := peer.count("/_matrix/federation/v1/media/download/plain") + peer.count("/_matrix/federation/v1/media/download/never-fetched"); n != 1 {
		t.Errorf("the peer was asked %d times for quarantined media, want the one earlier fetch", n)
	}
}
