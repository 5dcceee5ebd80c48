package keybackup_test

import (
	"net/http"
	"slices"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestVersions walks a backup's versions through their life: made with
// increasing IDs never reused, read, their auth_data replaced, deleted,
// and the current one falling back to the newest left, as in Synapse.
func TestVersions(t *testing.T) {
	st := servertest.Start(t)
	au := st.Register(t, "alice")
	alice := st.Client(t, au)
	bu := st.Register(t, "bob")

	r := st.Do(t, "GET", versionPath, au.AccessToken, nil)
	wantError(t, "current version before any", r, http.StatusNotFound, "M_NOT_FOUND")
	if r.Body["error"] != "No current backup version" {
		t.Errorf("error %q, want the spec's words", r.Body["error"])
	}

	v1, key1 := newBackup(t, alice)
	v2, _ := newBackup(t, alice)
	if v1 != "1" || v2 != "2" {
		t.Fatalf("versions %q and %q, want 1 and 2", v1, v2)
	}
	cur, err := alice.GetKeyBackupLatestVersion(bg)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Version != "2" || cur.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 || cur.Count != 0 || cur.ETag == "" {
		t.Errorf("current version: %+v", cur)
	}
	old, err := alice.GetKeyBackupVersion(bg, v1)
	if err != nil {
		t.Fatal(err)
	}
	if old.Version != "1" || string(old.AuthData.PublicKey) == "" || old.AuthData.PublicKey == cur.AuthData.PublicKey {
		t.Errorf("version 1: %+v", old)
	}
	if _, err := alice.GetKeyBackupVersion(bg, "3"); err == nil {
		t.Error("version 3 exists before it was made")
	}

	t.Run("Update", func(t *testing.T) {
		signed := map[string]any{"public_key": "bmV3IGtleQ", "signatures": map[string]any{au.ID: map[string]any{"ed25519:DEV": "sig"}}}
		r := st.Do(t, "PUT", versionPath+"/2", au.AccessToken, map[string]any{
			"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": signed, "version": "2"})
		if r.Status != http.StatusOK || string(r.Raw) != "{}" {
			t.Fatalf("update: %d %s", r.Status, r.Raw)
		}
		got := st.Do(t, "GET", versionPath+"/2", au.AccessToken, nil)
		auth, _ := got.Body["auth_data"].(map[string]any)
		if auth["public_key"] != "bmV3IGtleQ" || auth["signatures"] == nil {
			t.Errorf("auth_data after update: %s", got.Raw)
		}
		r = st.Do(t, "PUT", versionPath+"/2", au.AccessToken, map[string]any{
			"algorithm": "org.example.other", "auth_data": signed})
		wantError(t, "another algorithm", r, http.StatusBadRequest, "M_INVALID_PARAM")
		r = st.Do(t, "PUT", versionPath+"/2", au.AccessToken, map[string]any{
			"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": signed, "version": "1"})
		wantError(t, "version in body not the path's", r, http.StatusBadRequest, "M_INVALID_PARAM")
		r = st.Do(t, "PUT", versionPath+"/7", au.AccessToken, map[string]any{
			"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": signed})
		wantError(t, "update of an unknown version", r, http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("OtherUsers", func(t *testing.T) {
		wantError(t, "bob's current version", st.Do(t, "GET", versionPath, bu.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "alice's version 1 asked by bob", st.Do(t, "GET", versionPath+"/1", bu.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "bob deleting alice's version 1", st.Do(t, "DELETE", versionPath+"/1", bu.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
	})

	t.Run("Delete", func(t *testing.T) {
		if err := alice.DeleteKeyBackupVersion(bg, v2); err != nil {
			t.Fatal(err)
		}
		r := st.Do(t, "GET", versionPath+"/2", au.AccessToken, nil)
		wantError(t, "a deleted version", r, http.StatusNotFound, "M_NOT_FOUND")
		if r.Body["error"] != "Unknown backup version" {
			t.Errorf("error %q, want the spec's words", r.Body["error"])
		}
		cur, err := alice.GetKeyBackupLatestVersion(bg)
		if err != nil || cur.Version != v1 {
			t.Fatalf("current version after deleting 2: %+v, %v; want 1", cur, err)
		}
		if pub := base64Pub(key1); cur.AuthData.PublicKey != pub {
			t.Errorf("current auth_data %+v, want version 1's", cur.AuthData)
		}
		// The spec: deleting a deleted version succeeds.
		if r := st.Do(t, "DELETE", versionPath+"/2", au.AccessToken, nil); r.Status != http.StatusOK || string(r.Raw) != "{}" {
			t.Errorf("deleting again: %d %s", r.Status, r.Raw)
		}
		for _, v := range []string{"9", "abc", "01", "0"} {
			wantError(t, "delete of version "+v, st.Do(t, "DELETE", versionPath+"/"+v, au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		}
		wantError(t, "update of a deleted version", st.Do(t, "PUT", versionPath+"/2", au.AccessToken, map[string]any{
			"algorithm": id.KeyBackupAlgorithmMegolmBackupV1, "auth_data": map[string]any{"public_key": "x"}}),
			http.StatusNotFound, "M_NOT_FOUND")
		v3, _ := newBackup(t, alice)
		if v3 != "3" {
			t.Errorf("version after deleting 2 is %q, want 3: IDs are never reused", v3)
		}
		if err := alice.DeleteKeyBackupVersion(bg, v1); err != nil {
			t.Fatal(err)
		}
		if err := alice.DeleteKeyBackupVersion(bg, v3); err != nil {
			t.Fatal(err)
		}
		wantError(t, "current version with all deleted", st.Do(t, "GET", versionPath, au.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		if v4, _ := newBackup(t, alice); v4 != "4" {
			t.Errorf("version after deleting all is %q, want 4", v4)
		}
	})
}

// TestVersions_ConcurrentCreate: clients of one user creating backups at
// once, on two server instances, get distinct versions, and the current
// one is the highest.
func TestVersions_ConcurrentCreate(t *testing.T) {
	st := servertest.Start(t)
	twin := st.Twin(t)
	au := st.Register(t, "alice")
	const n = 8
	versions := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		on := st
		if i%2 == 1 {
			on = twin
		}
		c := on.Client(t, login(t, st, au))
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, _ := backup.NewMegolmBackupKey()
			resp, err := c.CreateKeyBackupVersion(bg, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
				Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: backup.MegolmAuthData{PublicKey: base64Pub(key)}})
			if err != nil {
				t.Errorf("create %d: %v", i, err)
				return
			}
			versions[i] = string(resp.Version)
		}()
	}
	wg.Wait()
	slices.Sort(versions)
	want := []string{"1", "2", "3", "4", "5", "6", "7", "8"}
	if !slices.Equal(versions, want) {
		t.Errorf("versions %v, want %v", versions, want)
	}
	cur, err := st.Client(t, au).GetKeyBackupLatestVersion(bg)
	if err != nil || cur.Version != "8" {
		t.Errorf("current version %+v, %v; want 8", cur, err)
	}
}

func base64Pub(k *backup.MegolmBackupKey) id.Ed25519 {
	return id.Ed25519(b64(k.PublicKey().Bytes()))
}
