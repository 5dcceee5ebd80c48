package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Admin is what Synapse's admin API for media needs beyond the content
// repository (docs/storage.md, "Admin, quarantine and limits").
type Admin struct {
	// RequireAdmin lets only server admins through
	// (accounts.Service.RequireAdmin); nil, the admin routes are not
	// registered.
	RequireAdmin func(http.HandlerFunc) http.HandlerFunc
	// LocalUsers calls f with each local user ID, for the deletes by date,
	// which have no index of all media; nil reads the accounts' index
	// partition (accountsIndexPK of shared/accounts).
	LocalUsers func(ctx context.Context, f func(userID string) error) error
	// Avatar is a local user's avatar URL (mxc://), which the delete by
	// date keeps unless keep_profiles=false; nil keeps nothing.
	Avatar func(ctx context.Context, userID string) (string, error)
}

// errBeingDeleted is an upload that waited refWait for a delete of the
// same content to finish.
var errBeingDeleted = errors.New("content is being deleted")

// refItem counts the media IDs whose content is one object, so that the
// object goes with the last of them. Every change of it is a conditional
// write on version, in the same transaction as the media item it counts
// for: the count never drifts from the items.
//
// An object is deleted only under a claim: the delete that brings the
// count to 0 sets deleting_ms in that transaction, deletes the object,
// then clears the claim. An upload of the same bytes meanwhile waits for
// the claim to go (or to be staleClaim old: its deleter died) and then
// stores the object again. So an item with content always has its object:
// count > 0 means the object is there.
type refItem struct {
	PK         string `dynamodbav:"pk"`
	SK         string `dynamodbav:"sk"`
	Count      int64  `dynamodbav:"count"`
	Version    int64  `dynamodbav:"version"`
	DeletingMS int64  `dynamodbav:"deleting_ms,omitempty"`
	// ExpiresAt lets DynamoDB drop a reference that counts nothing.
	ExpiresAt int64 `dynamodbav:"expires_at,omitempty"`
}

func refKey(sum string) store.Key { return store.Key{PK: "mediaref|" + sum, SK: "ref"} }

// Reference bounds: how long an upload waits for a delete of its content
// to finish, how old a claim must be to be taken over, how many lost races
// a write retries, and how long a zero count lingers.
const (
	refPoll     = 50 * time.Millisecond
	refWait     = 5 * time.Second
	staleClaim  = time.Minute
	refAttempts = 20
	refLinger   = 24 * time.Hour
)

func contentSum(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// storeContent stores body (whose SHA-256 is sum) and applies itemOp, the
// write of the media item that refers to it, in one transaction with the
// reference count. The object is written only by the upload that makes
// the count 1; the others cost no S3 call. A transaction that fails on
// itemOp's own condition returns an error wrapping store.ErrConflict.
func (s *Service) storeContent(ctx context.Context, body []byte, sum string, itemOp store.Op) error {
	if s.Objects == nil {
		return ErrNoBucket
	}
	k := refKey(sum)
	deadline := s.now().Add(refWait)
	for attempt := 0; ; attempt++ {
		var ref refItem
		err := s.Store.Get(ctx, k, &ref)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("store content: %w", err)
		}
		now := s.now()
		if exists && ref.DeletingMS != 0 && now.Sub(time.UnixMilli(ref.DeletingMS)) < staleClaim {
			if now.After(deadline) {
				return fmt.Errorf("store content %s: %w", sum, errBeingDeleted)
			}
			if err := sleep(ctx, refPoll); err != nil {
				return err
			}
			continue
		}
		if !exists || ref.Count <= 0 {
			// The object's own type is neutral: downloads through the
			// server set each media ID's, and presigned URLs override it.
			if err := s.Objects.PutObject(ctx, ObjectKey(sum), body, objects.Meta{ContentType: "application/octet-stream",
				CacheControl: "private, max-age=31536000, immutable"}); err != nil {
				return fmt.Errorf("store content: %w", err)
			}
			ref.Count = 0
		}
		next := refItem{PK: k.PK, SK: k.SK, Count: ref.Count + 1, Version: ref.Version + 1}
		op := store.CreateOp(next)
		if exists {
			op = store.PutIfOp(next, "version", ref.Version)
		}
		err = s.Store.Transact(ctx, op, itemOp)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= refAttempts {
			return fmt.Errorf("store content: %w", err)
		}
		// Lost a race on the count, or itemOp's condition failed: only
		// the first is worth another try.
		var again refItem
		gerr := s.Store.Get(ctx, k, &again)
		if gerr != nil && !errors.Is(gerr, store.ErrNotFound) {
			return fmt.Errorf("store content: %w", gerr)
		}
		if (gerr == nil) == exists && again.Version == ref.Version {
			return fmt.Errorf("store content: %w", err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// DeleteMedia deletes serverName's mediaID: its item, its thumbnails, and
// its content's object when no other media ID refers to the same bytes
// (the reference count, refItem, decides, in one transaction with the
// item's delete; concurrent deletes and uploads of the same bytes are safe).
// ErrNotFound when there is no such media. Media of other servers loses
// its item only: its cached object, under remote/, expires by the bucket's
// lifecycle rule.
//
// The admin API and the scheduled retention job (retention.go) both delete
// through it.
func (s *Service) DeleteMedia(ctx context.Context, serverName, mediaID string) error {
	if !validMediaID(mediaID) {
		return ErrNotFound
	}
	k := mediaKey(serverName, mediaID)
	var thumbs []string
	for attempt := 0; ; attempt++ {
		var it item
		if err := s.Store.Get(ctx, k, &it); errors.Is(err, store.ErrNotFound) {
			return ErrNotFound
		} else if err != nil {
			return fmt.Errorf("delete media %s: %w", mediaID, err)
		}
		if attempt == 0 {
			// Thumbnails go first: a delete cut short after them leaves
			// media that makes them again when asked.
			var err error
			if thumbs, err = s.deleteThumbnails(ctx, serverName, mediaID); err != nil {
				return fmt.Errorf("delete media %s: %w", mediaID, err)
			}
		}
		if it.State != stateUploaded || it.Object != "" || it.SHA256 == "" || serverName != s.ServerName {
			if err := s.Store.Delete(ctx, k); err != nil {
				return fmt.Errorf("delete media %s: %w", mediaID, err)
			}
			return nil
		}
		rk := refKey(it.SHA256)
		var ref refItem
		if err := s.Store.Get(ctx, rk, &ref); errors.Is(err, store.ErrNotFound) {
			// Content stored before references were counted: another ID
			// may share it, so the object stays.
			if err := s.Store.Delete(ctx, k); err != nil {
				return fmt.Errorf("delete media %s: %w", mediaID, err)
			}
			return nil
		} else if err != nil {
			return fmt.Errorf("delete media %s: %w", mediaID, err)
		}
		next := refItem{PK: rk.PK, SK: rk.SK, Count: ref.Count - 1, Version: ref.Version + 1}
		last := next.Count <= 0
		if last {
			next.Count, next.DeletingMS = 0, s.now().UnixMilli()
		}
		// The condition on the count's version also settles a race with
		// another delete of this ID: the loser finds the item gone.
		err := s.Store.Transact(ctx, store.PutIfOp(next, "version", ref.Version), store.DeleteOp(k))
		if errors.Is(err, store.ErrConflict) && attempt < refAttempts {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete media %s: %w", mediaID, err)
		}
		if !last {
			return nil
		}
		if err := s.deleteObject(ctx, it.SHA256, next); err != nil {
			return fmt.Errorf("delete media %s: %w", mediaID, err)
		}
		return s.deleteThumbnailObjects(ctx, it.SHA256, thumbs)
	}
}

// deleteObject deletes the content sum under the claim in ref, then clears
// the claim, leaving a zero count that expires. An upload that took the
// claim over (it was stale) has stored the object again and moved the
// version on: the clear then fails, as it should.
func (s *Service) deleteObject(ctx context.Context, sum string, ref refItem) error {
	d, ok := s.Objects.(interface {
		Delete(ctx context.Context, key string) error
	})
	if !ok {
		return fmt.Errorf("delete content %s: the bucket cannot delete", sum)
	}
	if err := d.Delete(ctx, ObjectKey(sum)); err != nil {
		return fmt.Errorf("delete content %s: %w", sum, err)
	}
	done := refItem{PK: ref.PK, SK: ref.SK, Version: ref.Version + 1, ExpiresAt: s.now().Add(refLinger).Unix()}
	if err := s.Store.PutIf(ctx, done, "version", ref.Version); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("delete content %s: release: %w", sum, err)
	}
	return nil
}

// deleteThumbnails deletes the thumbnail items of serverName's mediaID
// (thumbnails.go: in the media ID's partition) and returns the SHA-256 of
// those whose objects are under content/sha256/ (local media's).
func (s *Service) deleteThumbnails(ctx context.Context, serverName, mediaID string) ([]string, error) {
	pk := mediaKey(serverName, mediaID).PK
	var keys []store.Key
	var sums []string
	cursor := ""
	for {
		var page []struct {
			PK     string `dynamodbav:"pk"`
			SK     string `dynamodbav:"sk"`
			SHA256 string `dynamodbav:"sha256"`
			Object string `dynamodbav:"object"`
		}
		next, err := s.Store.QueryPage(ctx, store.Query{PK: pk, Prefix: "thumb|", Cursor: cursor}, &page)
		if err != nil {
			return nil, fmt.Errorf("thumbnails of %s: %w", mediaID, err)
		}
		for _, t := range page {
			keys = append(keys, store.Key{PK: t.PK, SK: t.SK})
			if t.SHA256 != "" && t.Object == ObjectKey(t.SHA256) {
				sums = append(sums, t.SHA256)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if err := s.Store.DeleteEach(ctx, keys); err != nil {
		return nil, fmt.Errorf("thumbnails of %s: %w", mediaID, err)
	}
	return sums, nil
}

// deleteThumbnailObjects deletes the thumbnails' objects (sums) once their
// original (content) has lost its last reference: thumbnails are made of
// the content, so other media IDs of the same bytes shared them until
// then. A thumbnail that is also some media's content (an image already
// within its box is its own thumbnail) stays while that content is
// counted. One deleted under another ID's thumbnail item is made again by
// its next request (thumbnails.go reads a missing object as a miss).
func (s *Service) deleteThumbnailObjects(ctx context.Context, content string, sums []string) error {
	d, ok := s.Objects.(interface {
		Delete(ctx context.Context, key string) error
	})
	if !ok {
		return nil
	}
	for _, sum := range sums {
		if sum == content {
			continue
		}
		var ref refItem
		if err := s.Store.Get(ctx, refKey(sum), &ref); err == nil && (ref.Count > 0 || ref.DeletingMS != 0) {
			continue
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("thumbnail %s: %w", sum, err)
		}
		if err := d.Delete(ctx, ObjectKey(sum)); err != nil {
			return fmt.Errorf("thumbnail %s: %w", sum, err)
		}
	}
	return nil
}

// Quarantine marks serverName's mediaID as quarantined by adminID (""
// lifts it): a quarantined local ID reads as absent to every download and
// thumbnail, for clients and other servers alike (Get). Local media this
// server does not hold is left alone, as Synapse does. Another server's
// media gets a marker item when it is not cached yet, and a cached item
// stops expiring while quarantined (a lifted one is dropped, to be fetched
// again).
//
// Fetcher.Media (remote.go), which reads its cached item itself, takes
// quarantined_by and the marker for absent and fetches nothing.
//
// The item is read and written back whole as a map, so that the
// attributes other writers add (remote.go's) survive.
func (s *Service) Quarantine(ctx context.Context, serverName, mediaID, adminID string) error {
	if !validMediaID(mediaID) {
		return nil
	}
	k := mediaKey(serverName, mediaID)
	remote := serverName != s.ServerName
	for attempt := 0; ; attempt++ {
		var it map[string]any
		err := s.Store.Get(ctx, k, &it)
		switch {
		case errors.Is(err, store.ErrNotFound) && (!remote || adminID == ""):
			return nil
		case errors.Is(err, store.ErrNotFound):
			marker := map[string]any{"pk": k.PK, "sk": k.SK, "server": serverName, "media_id": mediaID,
				"state": stateQuarantined, "quarantined_by": adminID, "created_ms": s.now().UnixMilli()}
			err = s.Store.Create(ctx, marker)
			if errors.Is(err, store.ErrExists) && attempt < refAttempts {
				continue
			}
		case err != nil:
		case adminID == "" && remote:
			err = s.Store.Delete(ctx, k)
		default:
			if by, _ := it["quarantined_by"].(string); by == adminID {
				return nil
			}
			state := it["state"]
			delete(it, "expires_at")
			if adminID == "" {
				delete(it, "quarantined_by")
			} else {
				it["quarantined_by"] = adminID
			}
			err = s.Store.PutIf(ctx, it, "state", state)
			if errors.Is(err, store.ErrConflict) && attempt < refAttempts {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("quarantine %s: %w", mediaID, err)
		}
		return nil
	}
}

// stateQuarantined is the marker of another server's media quarantined
// before this server fetched it.
const stateQuarantined = "quarantined"

// userMedia reads all of userID's uploaded media, oldest first: one index
// Query per 1 MB.
func (s *Service) userMedia(ctx context.Context, userID string) ([]item, error) {
	var all []item
	cursor := ""
	for {
		var page []item
		next, err := s.Store.QueryPage(ctx, store.Query{PK: userPartition(userID), Index: "gsi1", Cursor: cursor}, &page)
		if err != nil {
			return nil, fmt.Errorf("media of %s: %w", userID, err)
		}
		for _, it := range page {
			if it.State == stateUploaded {
				all = append(all, it)
			}
		}
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}

// localUsers is Admin.LocalUsers, or a read of the accounts' index
// partition ("accounts" on gsi1, one item per account, each with user_id).
func (s *Service) localUsers(ctx context.Context, f func(string) error) error {
	if s.Admin.LocalUsers != nil {
		return s.Admin.LocalUsers(ctx, f)
	}
	cursor := ""
	for {
		var page []struct {
			UserID string `dynamodbav:"user_id"`
		}
		next, err := s.Store.QueryPage(ctx, store.Query{PK: "accounts", Index: "gsi1", Cursor: cursor}, &page)
		if err != nil {
			return fmt.Errorf("local users: %w", err)
		}
		for _, u := range page {
			if u.UserID != "" {
				if err := f(u.UserID); err != nil {
					return err
				}
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

// DeleteBefore deletes the local media uploaded before before and larger
// than sizeGT bytes, but for quarantined media and, with keepProfiles,
// users' avatars (Synapse's delete_old_local_media). It returns the
// deleted media IDs.
func (s *Service) DeleteBefore(ctx context.Context, before time.Time, sizeGT int64, keepProfiles bool) ([]string, error) {
	deleted := []string{}
	err := s.localUsers(ctx, func(userID string) error {
		media, err := s.userMedia(ctx, userID)
		if err != nil {
			return err
		}
		avatar := ""
		if keepProfiles && s.Admin.Avatar != nil && len(media) > 0 {
			if avatar, err = s.Admin.Avatar(ctx, userID); err != nil {
				return fmt.Errorf("avatar of %s: %w", userID, err)
			}
		}
		for _, it := range media {
			m := it.media()
			if !m.Uploaded.Before(before) || m.Size <= sizeGT || it.QuarantinedBy != "" || m.URI() == avatar {
				continue
			}
			if err := s.DeleteMedia(ctx, m.ServerName, m.MediaID); errors.Is(err, ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			deleted = append(deleted, m.MediaID)
		}
		return nil
	})
	return deleted, err
}

// registerAdmin adds Synapse's admin API for media, behind
// Admin.RequireAdmin.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html
func (s *Service) registerAdmin(rt *httpapi.Router) {
	if s.Admin.RequireAdmin == nil {
		return
	}
	admin := func(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
		return s.Admin.RequireAdmin(httpapi.Handle(f))
	}
	const v1 = "/_synapse/admin/v1"
	rt.HandleFunc("GET "+v1+"/users/{userId}/media", admin(s.handleAdminUserMedia))
	rt.HandleFunc("DELETE "+v1+"/media/{serverName}/{mediaId}", admin(s.handleAdminDelete))
	rt.HandleFunc("POST "+v1+"/media/delete", admin(s.handleAdminDeleteBefore))
	rt.HandleFunc("POST "+v1+"/media/{serverName}/delete", admin(s.handleAdminDeleteBefore))
	rt.HandleFunc("POST "+v1+"/media/quarantine/{serverName}/{mediaId}", admin(s.handleAdminQuarantine(true)))
	rt.HandleFunc("POST "+v1+"/media/unquarantine/{serverName}/{mediaId}", admin(s.handleAdminQuarantine(false)))
}

// handleAdminUserMedia serves GET /_synapse/admin/v1/users/{userId}/media:
// newest first by default, ordered by created_ts only (the index's order;
// Synapse's other orders would read and sort everything), `from` an offset
// as in Synapse. It reads the user's whole index partition for total.
// https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html#list-media-uploaded-by-a-user
func (s *Service) handleAdminUserMedia(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	userID := r.PathValue("userId")
	from, err := queryInt(q.Get("from"), 0)
	if err != nil || from < 0 {
		return httpapi.InvalidParam("from must be a whole number, 0 or more")
	}
	limit, err := queryInt(q.Get("limit"), 100)
	if err != nil || limit < 0 {
		return httpapi.InvalidParam("limit must be a whole number, 0 or more")
	}
	if o := q.Get("order_by"); o != "" && o != "created_ts" {
		return httpapi.InvalidParam("order_by: only created_ts is supported")
	}
	dir := q.Get("dir")
	switch {
	case dir == "" && q.Get("order_by") == "":
		dir = "b"
	case dir == "":
		dir = "f"
	case dir != "f" && dir != "b":
		return httpapi.InvalidParam("dir must be f or b")
	}
	if !isLocalUser(userID, s.ServerName) {
		return httpapi.InvalidParam("can only look up local users")
	}
	media, err := s.userMedia(r.Context(), userID)
	if err != nil {
		return err
	}
	if dir == "b" {
		for i, j := 0, len(media)-1; i < j; i, j = i+1, j-1 {
			media[i], media[j] = media[j], media[i]
		}
	}
	total := len(media)
	page := media[min(int(from), total):min(int(from+limit), total)]
	out := make([]map[string]any, 0, len(page))
	for _, it := range page {
		m := map[string]any{"media_id": it.MediaID, "media_type": it.ContentType, "media_length": it.Size,
			"upload_name": nil, "created_ts": it.UploadedMS, "last_access_ts": nil,
			"quarantined_by": nil, "safe_from_quarantine": false, "sha256": it.SHA256}
		if it.Filename != "" {
			m["upload_name"] = it.Filename
		}
		if it.QuarantinedBy != "" {
			m["quarantined_by"] = it.QuarantinedBy
		}
		out = append(out, m)
	}
	body := map[string]any{"media": out, "total": total}
	if int(from+limit) < total {
		body["next_token"] = from + limit
	}
	httpapi.WriteJSON(w, http.StatusOK, body)
	return nil
}

func queryInt(v string, def int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// isLocalUser reports whether userID is @localpart:serverName.
func isLocalUser(userID, serverName string) bool {
	suffix := ":" + serverName
	return len(userID) > len(suffix)+1 && userID[0] == '@' && userID[len(userID)-len(suffix):] == suffix
}

// handleAdminDelete serves DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#delete-a-specific-local-media
func (s *Service) handleAdminDelete(w http.ResponseWriter, r *http.Request) error {
	if r.PathValue("serverName") != s.ServerName {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "can only delete local media")
	}
	id := r.PathValue("mediaId")
	if err := s.DeleteMedia(r.Context(), s.ServerName, id); errors.Is(err, ErrNotFound) {
		return httpapi.NotFound("unknown media")
	} else if err != nil {
		return err
	}
	slog.InfoContext(r.Context(), "media deleted by an admin", "media_id", id, "admin", accounts.Caller(r.Context()).UserID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": []string{id}, "total": 1})
	return nil
}

// handleAdminDeleteBefore serves POST /_synapse/admin/v1/media/delete and
// the deprecated POST /_synapse/admin/v1/media/{serverName}/delete.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#delete-local-media-by-date-or-size
func (s *Service) handleAdminDeleteBefore(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("before_ts") == "" {
		return httpapi.MissingParam("before_ts is required")
	}
	before, err := queryInt(q.Get("before_ts"), 0)
	if err != nil || before < 0 {
		return httpapi.InvalidParam("before_ts must be a timestamp in milliseconds")
	}
	// Synapse's guard against a timestamp in seconds.
	if before < 30000000000 {
		return httpapi.InvalidParam("before_ts is from the year 1970: give a timestamp in milliseconds")
	}
	sizeGT, err := queryInt(q.Get("size_gt"), 0)
	if err != nil || sizeGT < 0 {
		return httpapi.InvalidParam("size_gt must be a whole number of bytes, 0 or more")
	}
	keep := true
	switch q.Get("keep_profiles") {
	case "", "true":
	case "false":
		keep = false
	default:
		return httpapi.InvalidParam("keep_profiles must be true or false")
	}
	if sn := r.PathValue("serverName"); sn != "" && sn != s.ServerName {
		return httpapi.Errorf(http.StatusBadRequest, "M_UNKNOWN", "can only delete local media")
	}
	deleted, err := s.DeleteBefore(r.Context(), time.UnixMilli(before), sizeGT, keep)
	if err != nil {
		return err
	}
	slog.InfoContext(r.Context(), "media deleted by date", "before_ts", before, "size_gt", sizeGT,
		"keep_profiles", keep, "deleted", len(deleted), "admin", accounts.Caller(r.Context()).UserID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
	return nil
}

// handleAdminQuarantine serves POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}
// (on) and .../unquarantine/... (off), answering {} as Synapse does, also
// for media this server does not hold.
// https://element-hq.github.io/synapse/latest/admin_api/media_admin_api.html#quarantining-media-by-id
func (s *Service) handleAdminQuarantine(on bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		by := ""
		if on {
			by = accounts.Caller(r.Context()).UserID
		}
		if err := s.Quarantine(r.Context(), r.PathValue("serverName"), r.PathValue("mediaId"), by); err != nil {
			return err
		}
		slog.InfoContext(r.Context(), "media quarantine", "server", r.PathValue("serverName"), "media_id", r.PathValue("mediaId"),
			"quarantined", on, "admin", accounts.Caller(r.Context()).UserID)
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
		return nil
	}
}
