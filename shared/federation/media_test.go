package federation_test

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestMedia_FederationDownload: another server downloads this server's
// media as the spec shows: multipart/mixed, a JSON part {} then the file
// with its type and name (a read of the
// remote's key and one of the media item); a thumbnail of a file that has none is 400
// M_UNKNOWN;
// unknown media is 404 M_NOT_FOUND, and an unsigned request 401.
func TestMedia_FederationDownload(t *testing.T) {
	rm := servertest.NewRemote(t, "remote.test")
	st := servertest.StartFederation(t, []*servertest.Remote{rm})
	fed := st.FederationURL(t)
	alice := st.Member(t, "alice")
	data := []byte("hello over federation")
	up, err := alice.UploadMedia(background, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: "text/plain", FileName: "hello.txt"})
	if err != nil {
		t.Fatal(err)
	}
	id := up.ContentURI.FileID
	if status, raw, _ := rawGet(t, rm, fed, "/_matrix/federation/v1/media/thumbnail/"+id+"?width=32&height=32"); status != 400 || !strings.Contains(string(raw), "M_UNKNOWN") {
		t.Errorf("thumbnail of a text file: %d %s, want 400 M_UNKNOWN as the spec", status, raw)
	}
	for _, path := range []string{"/_matrix/federation/v1/media/download/" + id, "/_matrix/federation/v1/media/download/" + id} {
		req, _ := http.NewRequest("GET", fed+path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("unsigned %s: %d, want 401", path, res.StatusCode)
		}
		status, raw, ctype := rawGet(t, rm, fed, path)
		if status != 200 {
			t.Fatalf("%s: %d %s", path, status, raw)
		}
		mt, params, err := mime.ParseMediaType(ctype)
		if err != nil || mt != "multipart/mixed" {
			t.Fatalf("%s: Content-Type %q, want multipart/mixed", path, ctype)
		}
		mr := multipart.NewReader(bytes.NewReader(raw), params["boundary"])
		meta, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		metaBody, _ := io.ReadAll(meta)
		if meta.Header.Get("Content-Type") != "application/json" || string(metaBody) != "{}" {
			t.Errorf("%s: metadata part %q %q, want application/json {}", path, meta.Header.Get("Content-Type"), metaBody)
		}
		file, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(file)
		{
			if !bytes.Equal(got, data) || file.Header.Get("Content-Type") != "text/plain" || !strings.Contains(file.Header.Get("Content-Disposition"), "hello.txt") {
				t.Errorf("%s: file part %q %q %q, want the upload", path, file.Header.Get("Content-Type"), file.Header.Get("Content-Disposition"), got)
			}
			st.CheckCost(t, "federation media download", "GET /_matrix/federation/v1/media/download/", servertest.Want(2, 2, 0))
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Errorf("%s: a third part or a bad end: %v", path, err)
		}
	}
	if status, raw, _ := rawGet(t, rm, fed, "/_matrix/federation/v1/media/download/NOSUCHMEDIA"); status != 404 || !strings.Contains(string(raw), "M_NOT_FOUND") {
		t.Errorf("unknown media: %d %s, want 404 M_NOT_FOUND", status, raw)
	}
}

// rawGet is a signed GET of rm's to the federation tree at base.
func rawGet(t *testing.T, rm *servertest.Remote, base, uri string) (int, []byte, string) {
	t.Helper()
	status, raw := rm.DoRaw(t, base, "GET", uri, nil)
	// DoRaw returns no headers: the type is the boundary line's.
	ctype := ""
	if i := bytes.IndexByte(raw, '\r'); bytes.HasPrefix(raw, []byte("--")) && i > 2 {
		ctype = "multipart/mixed; boundary=" + string(raw[2:i])
	}
	return status, raw, ctype
}

// TestMedia_TwoServers: alice uploads on A; bob on B downloads it through
// B, which fetches it from A over federation: byte for byte, with its type.
func TestMedia_TwoServers(t *testing.T) {
	a, b := twoServers(t)
	alice, bob := a.Member(t, "alice"), b.Member(t, "bob")
	data := bytes.Repeat([]byte{0x89, 'P', 'N', 'G', 0, 1, 2, 3}, 300)
	up, err := alice.UploadMedia(background, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: "image/png", FileName: "a.png"})
	if err != nil {
		t.Fatal(err)
	}
	if up.ContentURI.Homeserver != a.Name() {
		t.Fatalf("content URI %s, want one of %s", up.ContentURI, a.Name())
	}
	for i := range 2 {
		res, err := bob.Download(background, up.ContentURI)
		if err != nil {
			t.Fatalf("download %d through B: %v\n%s", i, err, b.Logs())
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !bytes.Equal(got, data) || res.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("download %d through B: %d bytes of %s, want the %d uploaded on A", i, len(got), res.Header.Get("Content-Type"), len(data))
		}
	}
	m, err := b.Server.Media.Get(background, a.Name(), up.ContentURI.FileID)
	if err != nil || !strings.HasPrefix(m.Key(), "remote/") {
		t.Errorf("B's record of A's media: %+v %v, want it cached under remote/", m, err)
	}
}
