package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// The federation workloads run on servers of their own, each named by its
// federation listener's loopback address so that the others reach it:
// inbound, a fake remote server in the bench process sends a room on the
// server under test transactions of PDUs; outbound, a message sent on one
// server is timed until a user of another server sees it in its waiting
// /sync.
const (
	// fedRoomVersion is the version of the federation workloads' rooms:
	// one that Dendrite v0.13.8 knows.
	fedRoomVersion = "10"
	// pdusPerTxn is how many PDUs an inbound transaction carries, the most
	// the spec allows.
	pdusPerTxn = 50
	// maxInboundTxns caps the measured transactions of the inbound workload
	// (-n/10 of them).
	maxInboundTxns = 20
	// inboundVisibleTimeout bounds the wait for the last PDU to be visible.
	inboundVisibleTimeout = 2 * time.Minute
	// visiblePoll is how often the inbound workload reads /messages for its
	// last PDU, a small part of the seconds it measures.
	visiblePoll = 50 * time.Millisecond
	// deliveryIterations is how many messages the delivery workload times
	// at most (-n caps it too).
	deliveryIterations = 50
)

// inboundLabel names the inbound workload in the report.
var inboundLabel = fmt.Sprintf("inbound /send (%d PDUs a txn)", pdusPerTxn)

// fedWorkload lists the federation workloads, for the report's order and
// descriptions; runFederation measures them.
func fedWorkload() []endpoint {
	return []endpoint{
		{Label: inboundLabel, Describe: fmt.Sprintf("a fake remote server in the bench (its own ed25519 key at /_matrix/key/v2/server over TLS, X-Matrix-signed requests) joins a room of version %s on the server through make_join and send_join, then PUTs transactions of %d linear m.room.message PDUs, one after the other as a sending server does, in rounds alternating between the servers; p50/p99 are the PUT /send's, req/s is PDUs per second from the first PUT until the last PDU is in the room's /messages for a local member (read every %d ms once a round's last PUT has answered); DDB calls/RCU/WCU are per PDU: the /send requests' and the queue jobs' (Cirrus's inbox worker) of the run", fedRoomVersion, pdusPerTxn, visiblePoll.Milliseconds())},
		delivery(),
		mixedDelivery(cirrusToDendrite),
		mixedDelivery(dendriteToCirrus),
	}
}

// fakeRemote is a homeserver as far as the server under test sees it: its
// key served over TLS and the requests it signs.
type fakeRemote struct {
	name   string
	key    keys.Key
	srv    *httptest.Server
	client *http.Client
}

// startFakeRemote starts a fake remote on a loopback TLS listener, named by
// its address. It answers its key, and a /send from the server under test
// (its own events, EDUs) with an empty success.
func startFakeRemote() (*fakeRemote, error) {
	k, err := keys.Generate()
	if err != nil {
		return nil, err
	}
	rm := &fakeRemote{key: k, client: newHTTPClient()}
	rm.srv = httptest.NewUnstartedServer(http.HandlerFunc(rm.serve))
	rm.srv.EnableHTTP2 = true
	rm.srv.StartTLS()
	rm.name = rm.srv.Listener.Addr().String()
	return rm, nil
}

func (rm *fakeRemote) close() { rm.srv.Close() }

func (rm *fakeRemote) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/_matrix/key/v2/server":
		doc, err := keys.ServerKeys(rm.name, rm.key, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(doc)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/"):
		io.Copy(io.Discard, r.Body)
		w.Write([]byte(`{"pdus":{}}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"the bench's fake remote does not serve this"}`))
	}
}

// do sends a request signed by the remote to dest's federation listener,
// with requestID as X-Request-Id, and decodes a 200 answer into out.
func (rm *fakeRemote) do(ctx context.Context, dest *server, method, uri, requestID string, body, out any) error {
	fr := fclient.NewFederationRequest(method, spec.ServerName(rm.name), spec.ServerName(dest.serverName), uri)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return err
		}
	}
	if err := fr.Sign(spec.ServerName(rm.name), gomatrixserverlib.KeyID(rm.key.ID), rm.key.Private); err != nil {
		return err
	}
	signed, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, dest.FederationURL+uri, strings.NewReader(string(fr.Content())))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", signed.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	res, err := rm.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return statusError(method, uri, res.StatusCode, readSome(res.Body))
	}
	if out == nil {
		_, err = io.Copy(io.Discard, res.Body)
		return err
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, uri, err)
	}
	return nil
}

// remoteRoom is what the remote's user needs to send into a room it joined:
// the auth events of a message and the last event it sent.
type remoteRoom struct {
	id      string
	sender  string
	version gomatrixserverlib.IRoomVersion
	auth    []string // create, power levels, the sender's join
	prev    string
	depth   int64
}

// join has the remote's user join roomID on s through make_join and
// send_join (v2), and returns what it needs to send messages.
func (rm *fakeRemote) join(ctx context.Context, s *server, roomID, localpart string) (*remoteRoom, error) {
	user := "@" + localpart + ":" + rm.name
	var tmpl struct {
		RoomVersion string                       `json:"room_version"`
		Event       gomatrixserverlib.ProtoEvent `json:"event"`
	}
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(user) + "?ver=" + fedRoomVersion
	if err := rm.do(ctx, s, http.MethodGet, path, "", nil, &tmpl); err != nil {
		return nil, fmt.Errorf("make_join: %w", err)
	}
	version, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(tmpl.RoomVersion))
	if err != nil {
		return nil, fmt.Errorf("make_join: %w", err)
	}
	ev, err := version.NewEventBuilderFromProtoEvent(&tmpl.Event).Build(time.Now(), spec.ServerName(rm.name), gomatrixserverlib.KeyID(rm.key.ID), rm.key.Private)
	if err != nil {
		return nil, fmt.Errorf("sign the join: %w", err)
	}
	var joined struct {
		State []json.RawMessage `json:"state"`
	}
	path = "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.EventID())
	if err := rm.do(ctx, s, http.MethodPut, path, "", json.RawMessage(ev.JSON()), &joined); err != nil {
		return nil, fmt.Errorf("send_join: %w", err)
	}
	r := &remoteRoom{id: roomID, sender: user, version: version, prev: ev.EventID(), depth: ev.Depth()}
	for _, raw := range joined.State {
		st, err := version.NewEventFromUntrustedJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("send_join state: %w", err)
		}
		if st.Type() == spec.MRoomCreate || st.Type() == spec.MRoomPowerLevels {
			r.auth = append(r.auth, st.EventID())
		}
	}
	if len(r.auth) != 2 {
		return nil, fmt.Errorf("send_join state: %d create and power levels events, want 2", len(r.auth))
	}
	r.auth = append(r.auth, ev.EventID())
	return r, nil
}

// messages builds n messages of the remote's user, each after the one
// before (the first after the last sent), signed by the remote.
func (rm *fakeRemote) messages(r *remoteRoom, n int, body string) ([]gomatrixserverlib.PDU, error) {
	out := make([]gomatrixserverlib.PDU, 0, n)
	for i := range n {
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body + " " + strconv.Itoa(i)})
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: r.sender, RoomID: r.id, Type: "m.room.message", Content: content,
			PrevEvents: []string{r.prev}, AuthEvents: r.auth, Depth: r.depth + 1,
		}
		ev, err := r.version.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), spec.ServerName(rm.name), gomatrixserverlib.KeyID(rm.key.ID), rm.key.Private)
		if err != nil {
			return nil, fmt.Errorf("build a message: %w", err)
		}
		r.prev, r.depth = ev.EventID(), ev.Depth()
		out = append(out, ev)
	}
	return out, nil
}

// sendTxn PUTs the PDUs as one transaction and checks that none was
// refused; it returns the request ID it sent.
func (rm *fakeRemote) sendTxn(ctx context.Context, s *server, txnID string, pdus []gomatrixserverlib.PDU) (string, error) {
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p.JSON()
	}
	body := map[string]any{"origin": rm.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": raws}
	var ans struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	id := "bench-txn-" + randomHex(8)
	if err := rm.do(ctx, s, http.MethodPut, "/_matrix/federation/v1/send/"+url.PathEscape(txnID), id, body, &ans); err != nil {
		return "", err
	}
	for evID, res := range ans.PDUs {
		if res.Error != "" {
			return "", fmt.Errorf("send %s: PDU %s refused: %s", txnID, evID, res.Error)
		}
	}
	return id, nil
}

// createFedRoom has the bench user of s create a public room of
// fedRoomVersion.
func createFedRoom(ctx context.Context, s *server) (string, error) {
	var created struct {
		RoomID string `json:"room_id"`
	}
	err := requestJSON(ctx, s, http.MethodPost, s.ClientURL+"/_matrix/client/v3/createRoom", s.token,
		map[string]any{"preset": "public_chat", "room_version": fedRoomVersion}, &created)
	if err != nil {
		return "", fmt.Errorf("create a room: %w", err)
	}
	if created.RoomID == "" {
		return "", errors.New("create a room: no room_id in the answer")
	}
	return created.RoomID, nil
}

// lastMessage is the event ID of the newest event of a room's /messages
// for the bench user of s.
func lastMessage(ctx context.Context, s *server, roomID string) (string, error) {
	var page struct {
		Chunk []struct {
			EventID string `json:"event_id"`
		} `json:"chunk"`
	}
	u := s.ClientURL + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=1"
	if err := requestJSON(ctx, s, http.MethodGet, u, s.token, nil, &page); err != nil {
		return "", err
	}
	if len(page.Chunk) == 0 {
		return "", nil
	}
	return page.Chunk[0].EventID, nil
}

// waitVisible polls the room's /messages until its newest event is eventID,
// every visiblePoll: more often would take the CPU from the server's own
// work, which for Cirrus runs after /send has answered.
func waitVisible(ctx context.Context, s *server, roomID, eventID string) error {
	ctx, cancel := context.WithTimeout(ctx, inboundVisibleTimeout)
	defer cancel()
	for {
		last, err := lastMessage(ctx, s, roomID)
		if err != nil {
			return err
		}
		if last == eventID {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not the newest event of the room's /messages within %s (the newest: %q)", eventID, inboundVisibleTimeout, last)
		case <-time.After(visiblePoll):
		}
	}
}

// inboundTxns is how many transactions the inbound workload measures for -n.
func inboundTxns(n int) int { return max(1, min(n/10, maxInboundTxns)) }

// inboundRun is the inbound workload on one server: its room, and what its
// rounds measured so far.
type inboundRun struct {
	s       *server
	room    *remoteRoom
	lat     []time.Duration // of the PUT /send requests
	ids     []string        // their request IDs
	jobs    []logEntry      // the queue jobs run while the rounds ran
	pdus    int
	elapsed time.Duration // from each round's first PUT to its last PDU visible
	err     error
}

// measureInbound runs the inbound workload on the servers: on each, the
// remote joins a new room of the bench user's and sends one unmeasured
// transaction; then txns measured transactions, in rounds that alternate
// between the servers, as measure does, so that the machine's background
// load weighs on them alike. A round sends its transactions back to back
// and ends once its last PDU is visible.
func measureInbound(ctx context.Context, servers []*server, rm *fakeRemote, txns, rounds int) []result {
	runs := make([]*inboundRun, len(servers))
	for i, s := range servers {
		runs[i] = &inboundRun{s: s}
		runs[i].room, runs[i].err = prepareInbound(ctx, s, rm)
	}
	rounds = max(1, min(rounds, txns))
	for round := range rounds {
		size := txns / rounds
		if round == 0 {
			size += txns % rounds
		}
		for k := range runs {
			run := runs[k]
			if round%2 == 1 {
				run = runs[len(runs)-1-k]
			}
			if run.err == nil {
				run.err = run.round(ctx, rm, size)
			}
		}
	}
	results := make([]result, len(runs))
	for i, run := range runs {
		results[i] = run.result(txns)
	}
	return results
}

// prepareInbound has the remote join a new room of the bench user of s and
// sends one unmeasured transaction: the server fetches the remote's key and
// starts its worker.
func prepareInbound(ctx context.Context, s *server, rm *fakeRemote) (*remoteRoom, error) {
	if s.startErr != nil {
		return nil, s.startErr
	}
	roomID, err := createFedRoom(ctx, s)
	if err != nil {
		return nil, err
	}
	room, err := rm.join(ctx, s, roomID, "inbound")
	if err != nil {
		return nil, err
	}
	if err := sendAndWait(ctx, s, rm, room, "warm-up", 1); err != nil {
		return nil, fmt.Errorf("warm-up transaction: %w", err)
	}
	return room, nil
}

// round sends txns transactions back to back and waits until the last PDU
// is visible.
func (run *inboundRun) round(ctx context.Context, rm *fakeRemote, txns int) error {
	s := run.s
	batches := make([][]gomatrixserverlib.PDU, txns)
	for i := range batches {
		var err error
		if batches[i], err = rm.messages(run.room, pdusPerTxn, sentBody); err != nil {
			return err
		}
	}
	// The last job of the round before logs its line just after its PDU
	// is visible: the count starts once the job lines have stopped.
	jobsBefore := 0
	if s.Log != nil {
		jobsBefore = len(s.Log.jobsSince(0, 300*time.Millisecond))
	}
	start := time.Now()
	for _, b := range batches {
		t0 := time.Now()
		id, err := rm.sendTxn(ctx, s, "bench-"+randomHex(8), b)
		if err != nil {
			return err
		}
		run.lat, run.ids = append(run.lat, time.Since(t0)), append(run.ids, id)
	}
	last := batches[len(batches)-1]
	if err := waitVisible(ctx, s, run.room.id, last[len(last)-1].EventID()); err != nil {
		return err
	}
	run.elapsed += time.Since(start)
	run.pdus += txns * pdusPerTxn
	if s.Log != nil {
		run.jobs = append(run.jobs, s.Log.jobsSince(jobsBefore, 300*time.Millisecond)...)
	}
	return nil
}

// result summarises the run: latency of the PUTs, PDUs per second, and for
// a server with a request log the DynamoDB units per PDU.
func (run *inboundRun) result(txns int) result {
	s := run.s
	r := result{Endpoint: inboundLabel, Server: s.Name, Concurrency: 1, Requests: txns,
		URL: s.FederationURL + "/_matrix/federation/v1/send/{txnId}"}
	if run.err != nil {
		r.Failed = run.err.Error()
		return r
	}
	pdus := float64(run.pdus)
	r.P50MS, r.P99MS = ms(percentile(run.lat, 0.50)), ms(percentile(run.lat, 0.99))
	r.PerSecond = pdus / run.elapsed.Seconds()
	r.Note = fmt.Sprintf("%.0f PDUs in %d transactions", pdus, txns)
	if s.Log == nil {
		return r
	}
	entries, _ := s.Log.match(run.ids, 2*time.Second)
	sum, serverP50 := summarise(entries)
	jobSum, _ := summarise(run.jobs)
	matched := len(entries)
	r.LogMatched, r.ServerP50MS = &matched, serverP50
	per := func(v float64) *float64 { x := v / pdus; return &x }
	r.Calls, r.RCU, r.WCU = per(sum.Calls+jobSum.Calls), per(sum.RCU+jobSum.RCU), per(sum.WCU+jobSum.WCU)
	busy := 0.0
	for _, j := range run.jobs {
		busy += j.DurationMS
	}
	r.Note += fmt.Sprintf("; per PDU, the /send requests: %.2f DynamoDB calls, %.2f RCU, %.2f WCU; the queue jobs run meanwhile (%s, %.0f ms of the rounds' %.0f ms): %.2f calls, %.2f RCU, %.2f WCU",
		sum.Calls/pdus, sum.RCU/pdus, sum.WCU/pdus, jobKinds(run.jobs), busy, ms(run.elapsed), jobSum.Calls/pdus, jobSum.RCU/pdus, jobSum.WCU/pdus)
	return r
}

// jobKinds says how many jobs of each kind there are, as "10 federation.inbox".
func jobKinds(jobs []logEntry) string {
	count := make(map[string]int)
	for _, j := range jobs {
		count[j.Kind]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%d %s", count[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// sendAndWait sends n messages of the remote in one transaction and waits
// until the last is visible.
func sendAndWait(ctx context.Context, s *server, rm *fakeRemote, room *remoteRoom, txnID string, n int) error {
	pdus, err := rm.messages(room, n, sentBody)
	if err != nil {
		return err
	}
	if _, err := rm.sendTxn(ctx, s, txnID, pdus); err != nil {
		return err
	}
	return waitVisible(ctx, s, room.id, pdus[len(pdus)-1].EventID())
}

// delivery is the outbound workload: the bench user of a sending server
// sends into a room that the bench user of a receiving server joined over
// federation, who waits in /sync; as the sync wake-up workload, timed from
// the send's answer on the sender to the receiver's sync answer holding it.
func delivery() endpoint {
	return endpoint{
		Label: "federation delivery", Concurrency: 1, MaxRequests: deliveryIterations, Note: wakeUpNote,
		Path: fmt.Sprintf("/_matrix/client/v3/sync?since={token}&timeout=%d", wakeUpTimeout.Milliseconds()),
		Run:  func(ctx context.Context, s *server) (string, time.Duration, error) { return runWakeUp(ctx, s, 0) },
		Describe: fmt.Sprintf("the bench user of one server sends a message into a room of version %s it created, which the bench user of another server of the same kind (Cirrus to Cirrus, Dendrite to Dendrite) joined over federation (/join with server_name: make_join, send_join) and waits on in GET /sync?since=<its next_batch>&timeout=%d; timed from the send's 200 on the sender to the receiver's sync answer holding the message; Cirrus's sender and inbox worker run in cirrus serve's process, through its in-process queue (four pollers), not SQS and Lambda",
			fedRoomVersion, wakeUpTimeout.Milliseconds()),
	}
}

// The delivery workload between servers of the two kinds, named by the
// sending one.
const (
	cirrusToDendrite = "cirrus to dendrite"
	dendriteToCirrus = "dendrite to cirrus"
)

// mixedDelivery is the delivery workload from a server of one kind to one
// of the other (direction is cirrusToDendrite or dendriteToCirrus); its
// result is the sender's.
func mixedDelivery(direction string) endpoint {
	ep := delivery()
	from, to, _ := strings.Cut(direction, " to ")
	ep.Label = "federation delivery, " + direction
	ep.Describe = fmt.Sprintf("the delivery workload from the bench user of a %s to the bench user of a %s (the same servers as the workload between servers of one kind), who joined the %s's room of version %s over federation; timed from the send's 200 on the %s to the %s's sync answer holding the message; the two directions are measured in rounds alternating between them, after the workload between servers of one kind",
		from, to, from, fedRoomVersion, from, to)
	return ep
}

// setupDelivery has the bench user of from create a room, the bench user
// of to join it over federation, and returns a view of to whose sync
// fixture waits in that room for messages of from, named after from.
func setupDelivery(ctx context.Context, from, to *server) (*server, error) {
	if from.startErr != nil {
		return nil, from.startErr
	}
	if to.startErr != nil {
		return nil, to.startErr
	}
	roomID, err := createFedRoom(ctx, from)
	if err != nil {
		return nil, err
	}
	u := to.ClientURL + "/_matrix/client/v3/join/" + url.PathEscape(roomID) + "?server_name=" + url.QueryEscape(from.serverName)
	if err := requestJSON(ctx, to, http.MethodPost, u, to.token, map[string]any{}, nil); err != nil {
		return nil, fmt.Errorf("%s joins the room of %s: %w", to.Name, from.Name, err)
	}
	view := &server{Name: from.Name, ClientURL: to.ClientURL, FederationURL: to.FederationURL, client: to.client, token: to.token, userID: to.userID}
	view.sync = syncFixture{done: true, userID: to.userID, token: to.token, rooms: []string{roomID}, sender: from, senderOwns: true}
	return view, nil
}

// runFederation measures the federation workloads on servers of their own,
// all named by their federation listeners: two Cirrus and two Dendrites.
// The first of each kind takes the inbound transactions and sends the
// delivery workload's messages; the second receives them.
func runFederation(ctx context.Context, cirrusBin string, dendrite dendriteBuild, syncPoll time.Duration, rep *report, n int, stderr io.Writer) ([]*server, []result, error) {
	var started []*server
	var pairs [][2]*server // sender, receiver
	var pair [2]*server
	for i := range 2 {
		c, err := startRetrying(func() (*server, error) { return startCirrus(ctx, cirrusBin, syncPoll, federatedCirrusEnv...) })
		if err != nil {
			return started, nil, fmt.Errorf("cirrus for the federation workloads: %w", err)
		}
		started, pair[i] = append(started, c), c
	}
	pairs = append(pairs, pair)
	if rep.Baseline.Missing == "" {
		for i := range 2 {
			d, err := startRetrying(func() (*server, error) { return startDendrite(ctx, dendrite, true) })
			if err != nil {
				d = &server{Name: "dendrite", startErr: fmt.Errorf("start dendrite: %w", err)}
			}
			started, pair[i] = append(started, d), d
		}
		pairs = append(pairs, pair)
	}
	for _, s := range started {
		if s.startErr != nil {
			continue
		}
		if err := setupUser(ctx, s); err != nil {
			return started, nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		fmt.Fprintf(stderr, "bench: %s for the federation workloads (pid %d), server name %s\n", s.Name, s.cmd.Process.Pid, s.serverName)
	}

	var results []result
	rm, err := startFakeRemote()
	if err != nil {
		return started, nil, err
	}
	defer rm.close()
	var inbound []*server
	for _, p := range pairs {
		inbound = append(inbound, p[0])
	}
	for _, r := range measureInbound(ctx, inbound, rm, inboundTxns(n), rep.Rounds) {
		fmt.Fprintln(stderr, "bench:", progressLine(r))
		results = append(results, r)
	}
	if err := ctx.Err(); err != nil {
		return started, nil, err
	}

	ep := delivery()
	var views []*server
	costs := make(map[string]*deliveryCost)
	for _, p := range pairs {
		v, err := setupDelivery(ctx, p[0], p[1])
		if err != nil {
			results = append(results, result{Endpoint: ep.name(), Server: p[0].Name, Concurrency: 1, Failed: err.Error()})
			continue
		}
		views = append(views, v)
		if p[0].Log != nil && p[1].Log != nil {
			costs[v.Name] = startDeliveryCost(v, p[0], p[1])
		}
	}
	rs := measureEndpoint(ctx, views, ep, n, 1, rep.Warmup, rep.Rounds)
	for i, r := range rs {
		if c := costs[r.Server]; c != nil && r.Failed == "" {
			c.finish(&rs[i])
		}
		fmt.Fprintln(stderr, "bench:", progressLine(rs[i]))
	}
	results = append(results, rs...)
	if len(pairs) == 2 {
		if err := ctx.Err(); err != nil {
			return started, nil, err
		}
		c, d := pairs[0], pairs[1]
		results = append(results, measureMixed(ctx, [][2]*server{{c[0], d[1]}, {d[0], c[1]}}, n, rep, stderr)...)
	}
	return started, results, nil
}

// measureMixed measures the delivery workload from each pair's sender to
// its receiver, servers of different kinds: Cirrus to Dendrite, then
// Dendrite to Cirrus, in alternating rounds. They run after the workload
// between servers of one kind, whose DynamoDB figures they would swell.
func measureMixed(ctx context.Context, pairs [][2]*server, n int, rep *report, stderr io.Writer) []result {
	var results []result
	var views []*server
	var labels []string
	for _, p := range pairs {
		label := mixedDelivery(p[0].Name + " to " + p[1].Name).name()
		v, err := setupDelivery(ctx, p[0], p[1])
		if err != nil {
			results = append(results, result{Endpoint: label, Server: p[0].Name, Concurrency: 1, Failed: err.Error()})
			continue
		}
		views, labels = append(views, v), append(labels, label)
	}
	rs := measureEndpoint(ctx, views, delivery(), n, 1, rep.Warmup, rep.Rounds)
	for i := range rs {
		rs[i].Endpoint = labels[i]
		fmt.Fprintln(stderr, "bench:", progressLine(rs[i]))
	}
	return append(results, rs...)
}

// deliveryCost adds up what delivering the delivery workload's messages
// cost in DynamoDB on two Cirrus: the sender's federation.send jobs, and
// the receiver's /send requests and federation.inbox jobs.
type deliveryCost struct {
	view, from, to *server
	fromBefore     map[string]tally
	toBefore       map[string]tally
}

func startDeliveryCost(view, from, to *server) *deliveryCost {
	return &deliveryCost{view: view, from: from, to: to,
		fromBefore: from.Log.snapshot(300 * time.Millisecond), toBefore: to.Log.snapshot(300 * time.Millisecond)}
}

// finish sets r's DynamoDB figures per message delivered (every run, warm-up
// included, sent one) and notes their parts.
func (c *deliveryCost) finish(r *result) {
	messages := float64(c.view.sync.wakeUps)
	if messages == 0 {
		return
	}
	fromAfter, toAfter := c.from.Log.snapshot(300*time.Millisecond), c.to.Log.snapshot(300*time.Millisecond)
	send := since(c.fromBefore, fromAfter, func(k string) bool { return k == "job federation.send" })
	in := since(c.toBefore, toAfter, func(k string) bool { return strings.HasPrefix(k, "PUT /_matrix/federation/v1/send/") })
	inbox := since(c.toBefore, toAfter, func(k string) bool { return k == "job federation.inbox" })
	per := func(v float64) *float64 { x := v / messages; return &x }
	r.Calls = per(send.Sum.Calls + in.Sum.Calls + inbox.Sum.Calls)
	r.RCU = per(send.Sum.RCU + in.Sum.RCU + inbox.Sum.RCU)
	r.WCU = per(send.Sum.WCU + in.Sum.WCU + inbox.Sum.WCU)
	part := func(what string, t tally) string {
		return fmt.Sprintf("%s (%d): %.2f calls, %.2f RCU, %.2f WCU", what, t.Lines, t.Sum.Calls/messages, t.Sum.RCU/messages, t.Sum.WCU/messages)
	}
	cost := fmt.Sprintf("DynamoDB per message delivered (%.0f, warm-up included; the receiver's syncs not counted): %s; %s; %s",
		messages, part("sender's federation.send jobs", send), part("receiver's PUT /send", in), part("receiver's federation.inbox jobs", inbox))
	if r.Note != "" {
		cost = r.Note + "; " + cost
	}
	r.Note = cost
}

// federatedCirrusEnv lets cirrus serve reach the other servers of the run
// on loopback, with their self-signed certificates; startCirrus names it by
// its federation listener when it is given.
var federatedCirrusEnv = []string{"CIRRUS_FEDERATION_VERIFY_CERTIFICATES=false", "CIRRUS_IP_RANGE_WHITELIST=127.0.0.1/32", nameByListener}

// nameByListener, among startCirrus's extra settings, names the server by
// its federation listener's address.
const nameByListener = "CIRRUS_SERVER_NAME=<federation listener>"
