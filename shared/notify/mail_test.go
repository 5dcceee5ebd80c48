package notify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/notify"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// TestMain is notify_test.go's (testenv.Main).

const (
	appName   = "Cirrus Test"
	clientURL = "https://client.example.org"
	// mailDelay leaves a reader seconds to read before the mail is due,
	// on a loaded machine too.
	mailDelay = "3s"
)

// mailStack is a stack with notification mail on, its queue drained in
// process and its mail read back from the SES stand-in.
type mailStack struct {
	*servertest.Stack
	box *servertest.Mailbox
}

func startMailStack(t *testing.T) mailStack {
	t.Helper()
	s, release := heldMailStack(t)
	release()
	return s
}

// heldMailStack is startMailStack with its queue held until release: no
// job runs before then.
func heldMailStack(t *testing.T) (mailStack, func()) {
	t.Helper()
	s := servertest.Start(t,
		"CIRRUS_EMAIL_NOTIF_FROM=Cirrus <noreply@example.org>",
		"CIRRUS_EMAIL_ENABLE_NOTIFS=true",
		"CIRRUS_EMAIL_NOTIF_DELAY_BEFORE_MAIL="+mailDelay,
		"CIRRUS_EMAIL_APP_NAME="+appName,
		"CIRRUS_EMAIL_CLIENT_BASE_URL="+clientURL)
	release := s.HoldQueue(t)
	box := s.UseSES(t)
	return mailStack{Stack: s, box: box}, release
}

var addressSeq atomic.Int64

// address is a mail address no other test uses: the stand-in's store is
// shared by the package's tests.
func address(name string) string {
	return fmt.Sprintf("%s.%d.%d@mail.example.org", name, time.Now().UnixNano(), addressSeq.Add(1))
}

// withEmailPusher registers localpart, binds a new address to them and
// sets an email pusher for it, as a client does.
func (s mailStack) withEmailPusher(t *testing.T, localpart string) (servertest.User, string) {
	t.Helper()
	u := s.Register(t, localpart)
	addr := address(localpart)
	if err := s.Server.ThreePIDs.Bind(context.Background(), u.ID, "email", addr); err != nil {
		t.Fatal(err)
	}
	want(t, "set email pusher", s.Do(t, "POST", "/_matrix/client/v3/pushers/set", u.AccessToken, emailPusher(addr)), http.StatusOK, "")
	return u, addr
}

func emailPusher(addr string) map[string]any {
	return map[string]any{"kind": "email", "app_id": "m.email", "pushkey": addr,
		"app_display_name": "Email Notifications", "device_display_name": addr, "lang": "en", "data": map[string]any{"brand": "Element"}}
}

func want(t *testing.T, what string, r servertest.Reply, status int, errcode string) {
	t.Helper()
	if r.Status != status || (errcode != "" && r.Body["errcode"] != errcode) {
		t.Fatalf("%s: %d %s, want %d %s", what, r.Status, r.Raw, status, errcode)
	}
}

func (s mailStack) send(t *testing.T, u servertest.User, roomID, evType string, content any) string {
	t.Helper()
	txn := fmt.Sprint(time.Now().UnixNano())
	r := s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/"+evType+"/"+txn, u.AccessToken, content)
	want(t, "send "+evType, r, http.StatusOK, "")
	return r.Body["event_id"].(string)
}

// gardenRoom is a public room alice makes, named Garden Club, that the
// members join.
func (s mailStack) gardenRoom(t *testing.T, alice servertest.User, members ...servertest.User) string {
	t.Helper()
	r := s.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.AccessToken,
		map[string]any{"preset": "public_chat", "name": "Garden Club"})
	want(t, "createRoom", r, http.StatusOK, "")
	roomID := r.Body["room_id"].(string)
	for _, m := range members {
		want(t, "join", s.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), m.AccessToken, map[string]any{}), http.StatusOK, "")
	}
	return roomID
}

// mailLog is the line a notification mail job logs.
type mailLog struct {
	Msg     string `json:"msg"`
	UserID  string `json:"user_id"`
	Outcome string `json:"outcome"`
}

// waitOutcome waits for the first mail job of userID to log its outcome,
// and returns it: the job's completion, seen from outside.
func (s mailStack) waitOutcome(t *testing.T, userID string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		sc := bufio.NewScanner(strings.NewReader(s.Logs()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l mailLog
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "notification mail" && l.UserID == userID {
				return l.Outcome
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification mail job ran for %s", userID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMailWith waits until the mail sent to addr holds every one of
// texts in its text body, across mails: one job may have mailed the first
// message before the second was sent.
func (s mailStack) waitMailWith(t *testing.T, addr string, texts ...string) []servertest.Mail {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := s.box.To(t, addr)
		all := ""
		for _, m := range got {
			all += m.Text
		}
		missing := ""
		for _, x := range texts {
			if !strings.Contains(all, x) {
				missing = x
			}
		}
		if missing == "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("mail to %s lacks %q: %+v", addr, missing, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNotifMail_Unread: a message left unread is mailed after the delay,
// with the room, the sender's name and the message in both bodies, an
// encrypted one only said to be encrypted; one read before the delay is
// not mailed.
func TestNotifMail_Unread(t *testing.T) {
	// No job runs until bob has read: his receipt is before his mail job
	// however slow the machine.
	s, release := heldMailStack(t)
	carol, carolAddr := s.withEmailPusher(t, "carol")
	bob, bobAddr := s.withEmailPusher(t, "bob")
	alice := s.Register(t, "alice")
	want(t, "alice's name", s.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/displayname",
		alice.AccessToken, map[string]any{"displayname": "Alice Liddell"}), http.StatusOK, "")
	roomID := s.gardenRoom(t, alice, bob, carol)

	const secret = "c2VjcmV0IGNpcGhlcnRleHQgdGhhdCBtdXN0IG5vdCBsZWFr"
	msgID := s.send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "the roses are <out>"})
	encID := s.send(t, alice, roomID, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2",
		"ciphertext": secret, "sender_key": "abc", "session_id": "def", "device_id": "ALICEDEV"})
	// Bob reads both at once, before any job runs.
	want(t, "bob's receipt", s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(encID),
		bob.AccessToken, map[string]any{}), http.StatusOK, "")
	_ = msgID
	release()

	mails := s.waitMailWith(t, carolAddr, "the roses are <out>", "an encrypted message")
	for _, m := range mails {
		if !strings.HasPrefix(m.Subject, "["+appName+"] ") || !strings.Contains(m.Subject, "Garden Club") || !strings.Contains(m.Subject, "Alice Liddell") {
			t.Errorf("subject %q: want the app, the room and the sender", m.Subject)
		}
		for _, body := range []string{m.Text, m.HTML} {
			if strings.Contains(body, secret) {
				t.Errorf("mail shows the ciphertext: %s", body)
			}
			for _, x := range []string{"Alice Liddell", "Garden Club", clientURL + "/#/room/" + roomID, "/_synapse/client/unsubscribe?"} {
				if !strings.Contains(body, x) && !strings.Contains(body, strings.ReplaceAll(x, "&", "&amp;")) {
					t.Errorf("mail body lacks %q:\n%s", x, body)
				}
			}
		}
	}
	html := ""
	for _, m := range mails {
		html += m.HTML
	}
	// The HTML body escapes what the sender wrote.
	if !strings.Contains(html, "the roses are &lt;out&gt;") || strings.Contains(html, "<out>") {
		t.Errorf("HTML body does not show the message escaped:\n%s", html)
	}
	if !strings.Contains(html, "an encrypted message") {
		t.Errorf("HTML body lacks the encrypted message:\n%s", html)
	}

	// Bob's job ran too, and found nothing left unread.
	if got := s.waitOutcome(t, bob.ID); got != "nothing unread" {
		t.Errorf("bob's mail job: %q, want nothing unread", got)
	}
	if got := s.box.To(t, bobAddr); len(got) != 0 {
		t.Errorf("bob read everything and got mail: %+v", got)
	}
	s.waitJobs(t, 2)
}

// TestNotifMail_Burst: many messages make one job and one mail; the
// notifications after it make another, without the first one's messages.
func TestNotifMail_Burst(t *testing.T) {
	s := startMailStack(t)
	bob, bobAddr := s.withEmailPusher(t, "bob")
	alice := s.Register(t, "alice")
	roomID := s.gardenRoom(t, alice, bob)
	for i := range 5 {
		s.send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("burst %d", i)})
	}
	first := s.waitMailWith(t, bobAddr, "burst 0", "burst 4")
	s.send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.image", "body": "cat.png", "url": "mxc://example.org/cat"})
	got := s.waitMailWith(t, bobAddr, "sent an image")
	last := got[len(got)-1]
	if strings.Contains(last.Text, "burst") {
		t.Errorf("the later mail repeats the first one's messages:\n%s", last.Text)
	}
	// On a machine slow enough to let the delay pass mid-burst the burst
	// takes two mails; never one a message.
	if len(first) > 2 {
		t.Errorf("a burst of 5 messages made %d mails", len(first))
	}
	// A job logs its cost once it returns, after its mail is sent.
	if jobs := s.waitJobs(t, len(got)); len(jobs) != len(got) {
		t.Errorf("%d notif-mail jobs for %d mails", len(jobs), len(got))
	}
}

// waitJobs waits for n notif-mail jobs to have logged their costs, and
// logs them for docs/storage.md.
func (s mailStack) waitJobs(t *testing.T, n int) []jobCost {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		jobs := s.jobCosts(t)
		if len(jobs) >= n || time.Now().After(deadline) {
			for _, j := range jobs {
				t.Logf("notif-mail job (%s): %d calls, %.1f RCU, %.1f WCU", j.Outcome, j.Usage.Calls, j.Usage.ReadUnits, j.Usage.WriteUnits)
			}
			return jobs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobCost is what one notif-mail job did and cost, from its log lines.
type jobCost struct {
	Outcome string
	Usage   store.Usage
}

// jobCosts reads the notif-mail jobs from the stack's log. A job logs its
// outcome, then the queue its cost; the in-process queue runs one such job
// at a time.
func (s mailStack) jobCosts(t *testing.T) []jobCost {
	t.Helper()
	var out []jobCost
	outcome := ""
	for _, l := range strings.Split(s.Logs(), "\n") {
		var line struct {
			mailLog
			Kind     string      `json:"kind"`
			DynamoDB store.Usage `json:"dynamodb"`
		}
		if json.Unmarshal([]byte(l), &line) != nil {
			continue
		}
		switch {
		case line.Msg == "notification mail":
			outcome = line.Outcome
		case line.Msg == "job" && line.Kind == "notif-mail":
			out = append(out, jobCost{Outcome: outcome, Usage: line.DynamoDB})
			outcome = ""
		}
	}
	return out
}

// TestNotifMail_NotifiedCost: the hook the push worker calls for each
// notification costs one conditional write, whether it queues the job
// (the first of a burst) or finds one pending.
func TestNotifMail_NotifiedCost(t *testing.T) {
	s := startMailStack(t)
	bob, _ := s.withEmailPusher(t, "bob")
	for _, what := range []string{"first notification", "while pending"} {
		ctx, meter := store.WithMeter(context.Background())
		if err := s.Server.NotifMail.Notified(ctx, bob.ID, pusherOf(t, s, bob), "!room:example.org", nil, notifyOutcome()); err != nil {
			t.Fatal(err)
		}
		servertest.CheckUsage(t, what, meter.Usage(), servertest.Want(1, 0, 1))
	}
}

// TestNotifMail_Suppressed: an address on the suppression list gets no
// notification mail.
func TestNotifMail_Suppressed(t *testing.T) {
	s := startMailStack(t)
	bob, bobAddr := s.withEmailPusher(t, "bob")
	list := &mail.Suppressions{Store: s.Server.Store}
	if err := list.Add(context.Background(), mail.Suppression{Address: bobAddr, Reason: mail.ReasonBounce}); err != nil {
		t.Fatal(err)
	}
	alice := s.Register(t, "alice")
	roomID := s.gardenRoom(t, alice, bob)
	s.send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hello"})
	if got := s.waitOutcome(t, bob.ID); got != "suppressed" {
		t.Errorf("mail job of a suppressed address: %q, want suppressed", got)
	}
	if got := s.box.To(t, bobAddr); len(got) != 0 {
		t.Errorf("suppressed address got mail: %+v", got)
	}
}

// TestNotifMail_Unsubscribe: the mail's link shows a page that removes
// the email pusher only when its form is posted; a link with a forged
// token is 403 and removes nothing.
func TestNotifMail_Unsubscribe(t *testing.T) {
	s := startMailStack(t)
	bob, bobAddr := s.withEmailPusher(t, "bob")
	alice := s.Register(t, "alice")
	roomID := s.gardenRoom(t, alice, bob)
	s.send(t, alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hello"})
	m := s.box.Wait(t, bobAddr, 1)[0]
	link := m.LinkTo(t, s.URL+"/_synapse/client/unsubscribe?")

	status, page, header := get(t, "GET", link)
	if status != http.StatusOK || !strings.Contains(page, `<form method="post"`) || !strings.Contains(page, bobAddr) {
		t.Fatalf("GET unsubscribe: %d %s", status, page)
	}
	// The form posts to the link itself.
	if action := strings.TrimPrefix(link, s.URL); !strings.Contains(page, `action="`+strings.ReplaceAll(action, "&", "&amp;")+`"`) {
		t.Errorf("unsubscribe page does not post to %s: %s", action, page)
	}
	if header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("unsubscribe page headers: %v", header)
	}
	if n := emailPushers(t, s, bob); n != 1 {
		t.Fatalf("after GET: %d email pushers, want 1", n)
	}

	u, _ := url.Parse(link)
	forged := []func(q url.Values){
		func(q url.Values) { q.Set("token", "AAAA"+q.Get("token")[4:]) },
		func(q url.Values) { q.Set("token", "not base64!") },
		func(q url.Values) { q.Set("pushkey", "other@mail.example.org") },
		func(q url.Values) { q.Set("user_id", alice.ID) },
	}
	for i, forge := range forged {
		q := u.Query()
		forge(q)
		for _, method := range []string{"GET", "POST"} {
			if status, page, _ := get(t, method, s.URL+u.Path+"?"+q.Encode()); status != http.StatusForbidden {
				t.Errorf("forged link %d, %s: %d %s, want 403", i, method, status, page)
			}
		}
	}
	q := u.Query()
	q.Del("token")
	if status, _, _ := get(t, "POST", s.URL+u.Path+"?"+q.Encode()); status != http.StatusBadRequest {
		t.Errorf("link without token: %d, want 400", status)
	}
	if n := emailPushers(t, s, bob); n != 1 {
		t.Fatalf("after forged links: %d email pushers, want 1", n)
	}

	// The page's form posts to the link itself, as a one-click
	// unsubscribe (RFC 8058) does.
	status, page, _ = get(t, "POST", link)
	if status != http.StatusOK || !strings.Contains(page, "no longer mails") {
		t.Fatalf("POST unsubscribe: %d %s", status, page)
	}
	s.CheckCost(t, "unsubscribe", "POST "+notify.UnsubscribePath, servertest.Want(1, 0, 1))
	if n := emailPushers(t, s, bob); n != 0 {
		t.Fatalf("after POST: %d email pushers, want 0", n)
	}
}

// TestNotifMail_SetPusher: an email pusher is accepted only for an address
// bound to the account, with the app ID m.email and a data object.
func TestNotifMail_SetPusher(t *testing.T) {
	s := startMailStack(t)
	bob, bobAddr := s.withEmailPusher(t, "bob")
	alice, aliceAddr := s.withEmailPusher(t, "alice")
	set := func(p map[string]any) servertest.Reply {
		return s.Do(t, "POST", "/_matrix/client/v3/pushers/set", bob.AccessToken, p)
	}
	with := func(f func(p map[string]any)) map[string]any {
		p := emailPusher(bobAddr)
		f(p)
		return p
	}
	for _, tc := range []struct {
		name    string
		pusher  map[string]any
		errcode string
	}{
		{"address of nobody", emailPusher(address("nobody")), "M_THREEPID_NOT_FOUND"},
		{"another user's address", emailPusher(aliceAddr), "M_THREEPID_NOT_FOUND"},
		{"other app ID", with(func(p map[string]any) { p["app_id"] = "im.vector" }), "M_INVALID_PARAM"},
		{"data not an object", with(func(p map[string]any) { p["data"] = []int{1} }), "M_BAD_JSON"},
		{"brief not a boolean", with(func(p map[string]any) { p["data"] = map[string]any{"brief": "yes"} }), "M_BAD_JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want(t, tc.name, set(tc.pusher), http.StatusBadRequest, tc.errcode)
		})
	}
	want(t, "brief", set(with(func(p map[string]any) { p["data"] = map[string]any{"brief": true} })), http.StatusOK, "")
	// Set: the token, the ownership check (the address's binding), the
	// pusher's PutItem (2 WCU with its index entry) and the query for
	// other users' pushers of the same address.
	s.CheckCost(t, "set email pusher", "POST /_matrix/client/v3/pushers/set", servertest.Want(4, 2.5, 2))
	if n := emailPushers(t, s, bob); n != 1 {
		t.Errorf("bob has %d email pushers, want 1", n)
	}
	_ = alice

	// notif_for_new_users: the hook registration calls once an address
	// is bound.
	carol := s.Register(t, "carol")
	if err := s.Server.Push.AddEmailPusher(context.Background(), carol.ID, address("carol")); err != nil {
		t.Fatal(err)
	}
	if n := emailPushers(t, s, carol); n != 1 {
		t.Errorf("carol has %d email pushers, want 1", n)
	}
}

// get sends an unsubscribe request and returns its status, page and
// headers (pages are HTML, not Matrix JSON).
func get(t *testing.T, method, link string) (int, string, http.Header) {
	t.Helper()
	var body io.Reader
	if method == "POST" {
		body = strings.NewReader("List-Unsubscribe=One-Click")
	}
	req, err := http.NewRequest(method, link, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(page), res.Header
}

func emailPushers(t *testing.T, s mailStack, u servertest.User) int {
	t.Helper()
	r := s.Do(t, "GET", "/_matrix/client/v3/pushers", u.AccessToken, nil)
	want(t, "GET /pushers", r, http.StatusOK, "")
	n := 0
	for _, p := range r.Body["pushers"].([]any) {
		if p.(map[string]any)["kind"] == "email" {
			n++
		}
	}
	return n
}

func pusherOf(t *testing.T, s mailStack, u servertest.User) push.Stored {
	t.Helper()
	list, err := s.Server.Push.Pushers(context.Background(), u.ID)
	if err != nil || len(list) != 1 {
		t.Fatalf("pushers of %s: %v %v", u.ID, list, err)
	}
	return list[0]
}

func notifyOutcome() push.Outcome { return push.Outcome{Notify: true} }

// TestNotifMail_AddressRemoved: an address the account loses takes its
// email pusher with it, as in Synapse.
func TestNotifMail_AddressRemoved(t *testing.T) {
	s := startMailStack(t)
	dora, addr := s.withEmailPusher(t, "dora")
	if n := emailPushers(t, s, dora); n != 1 {
		t.Fatalf("dora has %d email pushers, want 1", n)
	}
	r := s.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", dora.AccessToken, map[string]any{"medium": "email", "address": addr})
	want(t, "delete address", r, http.StatusOK, "")
	if n := emailPushers(t, s, dora); n != 0 {
		t.Errorf("after the address went: %d email pushers, want 0", n)
	}
}
