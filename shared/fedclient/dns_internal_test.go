package fedclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a DNS server on loopback UDP answering A and SRV questions
// from maps (names with their final dot); anything else is NXDOMAIN.
type dnsServer struct {
	conn net.PacketConn
	a    map[string]string
	srv  map[string][]dnsmessage.SRVResource
}

func startDNS(t *testing.T, a map[string]string, srv map[string][]dnsmessage.SRVResource) *net.Resolver {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &dnsServer{conn: conn, a: a, srv: srv}
	go s.serve()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", conn.LocalAddr().String())
	}}
}

func (s *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		if out, err := s.answer(h, q); err == nil {
			s.conn.WriteTo(out, from)
		}
	}
}

func (s *dnsServer) answer(h dnsmessage.Header, q dnsmessage.Question) ([]byte, error) {
	name := q.Name.String()
	_, knownA := s.a[name]
	_, knownSRV := s.srv[name]
	rcode := dnsmessage.RCodeSuccess
	if !knownA && !knownSRV {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: rcode})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch q.Type {
	case dnsmessage.TypeA:
		if ip, ok := s.a[name]; ok {
			if err := b.AResource(rh, dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()}); err != nil {
				return nil, err
			}
		}
	case dnsmessage.TypeSRV:
		for _, r := range s.srv[name] {
			if err := b.SRVResource(rh, r); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

// TestResolver_RealDNS runs discovery over Go's own resolver against a DNS
// server: SRV records in priority order, their targets resolved at dial
// time, a "." target as no service; and a name that resolves to loopback
// is refused at the connection unless loopback is whitelisted.
func TestResolver_RealDNS(t *testing.T) {
	rm := newRemote(t, nil)
	_, port, _ := net.SplitHostPort(rm.name)
	p, _ := strconv.Atoi(port)
	target := func(name string) dnsmessage.Name { return dnsmessage.MustNewName(name) }
	dns := startDNS(t, map[string]string{
		"fed.multi.test.": "127.0.0.1",
		"backup.test.":    "127.0.0.1",
	}, map[string][]dnsmessage.SRVResource{
		"_matrix-fed._tcp.multi.test.": {
			{Priority: 20, Weight: 1, Port: 1, Target: target("backup.test.")},
			{Priority: 10, Weight: 1, Port: uint16(p), Target: target("fed.multi.test.")},
		},
		"_matrix-fed._tcp.none.test.": {{Target: target(".")}},
	})
	opts := rm.loopbackOK()
	opts.DNS = dns
	c := mustNew(t, opts)
	got, err := c.Resolver().Resolve(context.Background(), "multi.test")
	want := []Target{{"fed.multi.test:" + port, "multi.test", "multi.test"}, {"backup.test:1", "multi.test", "multi.test"}}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Resolve(multi.test) = %+v, %v; want %+v", got, err, want)
	}
	if err := c.Get(context.Background(), "multi.test", versionPath, nil); err != nil {
		t.Fatalf("GET multi.test: %v", err)
	}
	if _, err := c.Resolver().Resolve(context.Background(), "none.test"); !errors.Is(err, ErrNoService) {
		t.Fatalf("Resolve(none.test): %v, want ErrNoService", err)
	}
	got, err = c.Resolver().Resolve(context.Background(), "nothing.test")
	if err != nil || len(got) != 1 || got[0].Addr != "nothing.test:8448" {
		t.Fatalf("Resolve(nothing.test) = %+v, %v; want nothing.test:8448", got, err)
	}

	opts.IPRangeWhitelist = nil
	err = mustNew(t, opts).Get(context.Background(), "multi.test", versionPath, nil)
	if !errors.Is(err, ErrAddressRefused) || strings.Contains(err.Error(), "certificate") {
		t.Fatalf("GET multi.test with loopback refused: %v, want ErrAddressRefused", err)
	}
}
