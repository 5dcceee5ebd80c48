package notify

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/mail"
)

// UnsubscribePath is where the unsubscribe link of a notification mail
// leads, Synapse's path: GET shows a page that asks to confirm, POST (the
// page's button, or a mail client's one-click unsubscribe, RFC 8058)
// removes the email pusher.
const UnsubscribePath = "/_synapse/client/unsubscribe"

// unsubscribeLabel is the HKDF info of the unsubscribe key: the key is
// used for nothing else, and the signing key is never used as it is.
const unsubscribeLabel = "cirrus notification mail unsubscribe v1"

// UnsubscribeKey derives the key that signs unsubscribe links from the
// server's signing key seed (HKDF-SHA-256): links stay valid as long as
// the signing key does, and need no item in the table.
func UnsubscribeKey(seed []byte) []byte {
	k, err := hkdf.Key(sha256.New, seed, nil, unsubscribeLabel, sha256.Size)
	if err != nil {
		panic(err) // only for lengths HKDF cannot give
	}
	return k
}

// unsubscribeToken is the HMAC-SHA-256 of the user ID, app ID and pushkey,
// each prefixed with its length so that no two triples sign alike.
func (m *Mailer) unsubscribeToken(userID, appID, pushKey string) []byte {
	h := hmac.New(sha256.New, m.Key)
	for _, s := range []string{userID, appID, pushKey} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}

// unsubscribeURL is the link that removes the user's pusher of the app ID
// and pushkey.
func (m *Mailer) unsubscribeURL(userID, appID, pushKey string) string {
	q := url.Values{"user_id": {userID}, "app_id": {appID}, "pushkey": {pushKey},
		"token": {base64.RawURLEncoding.EncodeToString(m.unsubscribeToken(userID, appID, pushKey))}}
	return strings.TrimRight(m.BaseURL, "/") + UnsubscribePath + "?" + q.Encode()
}

// listUnsubscribe is the header of a mail's unsubscribe link, with one-click
// unsubscribe (RFC 2369, RFC 8058), which mail providers ask of bulk mail.
func listUnsubscribe(link string) []mail.Header {
	return []mail.Header{
		{Name: "List-Unsubscribe", Value: "<" + link + ">"},
		{Name: "List-Unsubscribe-Post", Value: "List-Unsubscribe=One-Click"},
	}
}

// Register adds the unsubscribe page to rt. It takes no access token: the
// link's token, which only this server can make, is the authority.
func (m *Mailer) Register(rt *httpapi.Router) {
	rt.HandleFunc("GET "+UnsubscribePath, httpapi.Handle(m.handleUnsubscribe))
	rt.HandleFunc("POST "+UnsubscribePath, httpapi.Handle(m.handleUnsubscribe))
}

type unsubscribePage struct {
	App, Address string
	// Action is where the page's form posts: this same link.
	Action string
}

type unsubscribeFailure struct {
	App, Title, Message string
}

// handleUnsubscribe serves GET and POST /_synapse/client/unsubscribe.
func (m *Mailer) handleUnsubscribe(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodPost {
		// A one-click unsubscribe posts List-Unsubscribe=One-Click; the
		// link says everything, the body nothing.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<12))
	}
	q := r.URL.Query()
	userID, appID, pushKey, token := q.Get("user_id"), q.Get("app_id"), q.Get("pushkey"), q.Get("token")
	if userID == "" || appID == "" || pushKey == "" || token == "" {
		return m.Templates.Page(w, http.StatusBadRequest, "unsubscribe_failure", unsubscribeFailure{App: m.AppName,
			Title:   "This link is incomplete",
			Message: "The unsubscribe link lacks some of its parts: open the whole link from the mail."})
	}
	mac, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !hmac.Equal(mac, m.unsubscribeToken(userID, appID, pushKey)) {
		return m.Templates.Page(w, http.StatusForbidden, "unsubscribe_failure", unsubscribeFailure{App: m.AppName,
			Title:   "This link is not valid",
			Message: "The unsubscribe link was not made by this server, or was changed: open the link from the mail as it is."})
	}
	if r.Method != http.MethodPost {
		return m.Templates.Page(w, http.StatusOK, "unsubscribe", unsubscribePage{App: m.AppName, Address: pushKey,
			Action: UnsubscribePath + "?" + r.URL.RawQuery})
	}
	if err := m.Push.RemovePusher(r.Context(), userID, appID, pushKey); err != nil {
		return err
	}
	return m.Templates.Page(w, http.StatusOK, "unsubscribe_success", unsubscribePage{App: m.AppName, Address: pushKey})
}
