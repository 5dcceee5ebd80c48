package federation_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// peer is a fake homeserver holding one room built from hand-made signed
// PDUs: it serves its key, make_join and send_join for that room, and
// records the transactions other servers send it (/send). While down it
// refuses every request but its key with 503, as a server that is not
// there to answer.
type peer struct {
	name   string
	signer events.Signer
	addr   string

	v       string
	roomID  string
	state   []events.PDU // current state, in order
	auth    []events.PDU // the auth chain of state: what member events name
	base    *events.State
	last    events.PDU
	depth   int64
	joins   int
	sendJSN int // send_join requests answered

	// omit, when set, has send_join honour omit_members: the state without
	// member events but the creator's, and servers (the servers in the
	// room; the peer alone when nil).
	omit    bool
	servers []string
	// stateGate, when set, holds each /state answer until it is closed.
	stateGate chan struct{}

	mu   sync.Mutex
	down bool
	txns []peerTxn
	// asked lists "<method> <path>?<query>" of the federation requests
	// other than /send.
	asked []string
}

// peerTxn is a transaction the peer received.
type peerTxn struct {
	ID     string
	Origin string
	PDUs   []json.RawMessage
}

// newPeer starts a peer named name (reached through federation_hosts) with
// a room of version v: its creator's join, public join rules, shared
// history, and members more joined users of its own.
func newPeer(t testing.TB, name, v string, members int) *peer {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{name: name, signer: events.Signer{ServerName: name, Key: k}, v: v}
	p.build(t, members)
	srv := httptest.NewTLSServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// env is the configuration a stack needs to reach p.
func (p *peer) env() []string {
	return append(append([]string{}, servertest.FederationEnv...), "CIRRUS_FEDERATION_HOSTS="+p.name+"="+p.addr)
}

func (p *peer) userID(local string) string { return "@" + local + ":" + p.name }

// add signs an event of the room after the last one, with auth events
// chosen from the room's base state.
func (p *peer) add(t testing.TB, typ, stateKey string, content string) events.PDU {
	t.Helper()
	sk := stateKey
	pr := events.Proto{RoomID: p.roomID, Sender: p.userID("creator"), Type: typ, StateKey: &sk, Content: json.RawMessage(content)}
	if typ == events.Member {
		pr.Sender = stateKey
	}
	g := events.Graph{Depth: p.depth + 1}
	if p.last != nil {
		g.PrevEvents = []string{p.last.EventID()}
	}
	ev, err := p.signer.Build(p.v, pr, g, p.base, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.depth++
	p.last = ev
	if p.roomID == "" {
		p.roomID = events.RoomID(ev)
	}
	p.state = append(p.state, ev)
	return ev
}

func (p *peer) build(t testing.TB, members int) {
	t.Helper()
	creator := p.userID("creator")
	power := `{"users":{"` + creator + `":100}}`
	if p.v == "12" {
		power = `{}` // creators of a v12 room are above power levels
	}
	for _, e := range [][3]string{
		{events.Create, "", `{"room_version":"` + p.v + `","creator":"` + creator + `"}`},
		{events.Member, creator, `{"membership":"join"}`},
		{events.PowerLevels, "", power},
		{events.JoinRules, "", `{"join_rule":"public"}`},
		{events.HistoryVisibility, "", `{"history_visibility":"shared"}`},
		{events.Name, "", `{"name":"Big room"}`},
	} {
		p.add(t, e[0], e[1], e[2])
		var err error
		if p.base, err = events.NewState(p.state); err != nil {
			t.Fatal(err)
		}
	}
	p.auth = append([]events.PDU(nil), p.state[:4]...)
	for i := range members - 1 {
		p.add(t, events.Member, p.userID(fmt.Sprintf("u%d", i)), `{"membership":"join","displayname":"Member `+fmt.Sprint(i)+`"}`)
	}
	p.joins = members
}

// setDown makes the peer refuse requests (down) or answer them again.
func (p *peer) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// received lists the transactions received so far.
func (p *peer) received() []peerTxn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]peerTxn(nil), p.txns...)
}

func (p *peer) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/_matrix/key/v2/server" {
		doc, err := keys.ServerKeys(p.name, p.signer.Key, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
		return
	}
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"errcode": "M_UNKNOWN", "error": "down"})
		return
	}
	if !strings.HasPrefix(path, "/_matrix/federation/v1/send/") {
		p.mu.Lock()
		p.asked = append(p.asked, r.Method+" "+path+"?"+r.URL.RawQuery)
		p.mu.Unlock()
	}
	switch {
	case strings.HasPrefix(path, "/_matrix/federation/v1/state/"):
		p.stateAt(w, r)
	case strings.HasPrefix(path, "/_matrix/federation/v1/event/"):
		p.event(w, strings.TrimPrefix(path, "/_matrix/federation/v1/event/"))
	case strings.HasPrefix(path, "/_matrix/federation/v1/make_join/"):
		p.makeJoin(w, r)
	case strings.HasPrefix(path, "/_matrix/federation/v2/send_join/"):
		p.sendJoin(w, r)
	case strings.HasPrefix(path, "/_matrix/federation/v1/send/") && r.Method == http.MethodPut:
		var txn peerTxn
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &txn); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errcode": "M_BAD_JSON", "error": err.Error()})
			return
		}
		txn.ID = strings.TrimPrefix(path, "/_matrix/federation/v1/send/")
		p.mu.Lock()
		p.txns = append(p.txns, txn)
		p.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "not served by the fake peer"})
	}
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// makeJoin answers a template of the join of the user the path names.
// Requests are answered one at a time: the library's events are not
// safe to use from two goroutines at once.
func (p *peer) makeJoin(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/make_join/"), "/")
	if len(parts) != 2 || parts[0] != p.roomID {
		writeJSON(w, http.StatusNotFound, map[string]any{"errcode": "M_NOT_FOUND", "error": "no such room"})
		return
	}
	user := parts[1]
	pr := events.Proto{RoomID: p.roomID, Sender: user, Type: events.Member, StateKey: &user, Content: json.RawMessage(`{"membership":"join"}`)}
	tmpl, _, err := p.signer.Template(p.v, pr, events.Graph{PrevEvents: []string{p.last.EventID()}, Depth: p.depth + 1}, p.base, time.Now())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"errcode": "M_UNKNOWN", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_version": p.v, "event": tmpl})
}

// sendJoin answers the whole state and its auth chain, or, asked to omit
// members when p.omit is set, the state without the members but the
// creator.
func (p *peer) sendJoin(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	defer p.mu.Unlock()
	omit := p.omit && r.URL.Query().Get("omit_members") == "true"
	creator := p.userID("creator")
	var state []json.RawMessage
	for _, ev := range p.state {
		if omit && ev.Type() == events.Member && *ev.StateKey() != creator {
			continue
		}
		state = append(state, ev.JSON())
	}
	auth := make([]json.RawMessage, len(p.auth))
	for i, ev := range p.auth {
		auth[i] = ev.JSON()
	}
	servers := p.servers
	if servers == nil {
		servers = []string{p.name}
	}
	p.sendJSN++
	writeJSON(w, http.StatusOK, map[string]any{"origin": p.name, "state": state, "auth_chain": auth, "event": json.RawMessage(body),
		"members_omitted": omit, "servers_in_room": servers})
}

// stateAt answers GET /state of the room at any event with the whole
// state the room had before the joins it answered (the peer keeps no
// joins of other servers), once stateGate, if set, is closed.
func (p *peer) stateAt(w http.ResponseWriter, r *http.Request) {
	if p.stateGate != nil {
		<-p.stateGate
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/state/") != p.roomID {
		writeJSON(w, http.StatusNotFound, map[string]any{"errcode": "M_NOT_FOUND", "error": "no such room"})
		return
	}
	state := make([]json.RawMessage, len(p.state))
	for i, ev := range p.state {
		state[i] = ev.JSON()
	}
	auth := make([]json.RawMessage, len(p.auth))
	for i, ev := range p.auth {
		auth[i] = ev.JSON()
	}
	writeJSON(w, http.StatusOK, map[string]any{"pdus": state, "auth_chain": auth})
}

// event answers GET /event of an event of the room's state.
func (p *peer) event(w http.ResponseWriter, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range p.state {
		if ev.EventID() == id {
			writeJSON(w, http.StatusOK, map[string]any{"origin": p.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{ev.JSON()}})
			return
		}
	}
	writeJSON(w, http.StatusNotFound, map[string]any{"errcode": "M_NOT_FOUND", "error": "no such event"})
}

// requests lists what the peer was asked but /send.
func (p *peer) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.asked...)
}
