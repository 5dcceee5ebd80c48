package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// TestServe_TrickledBodyIsCut sends a request whose body comes a byte at a
// time, too slowly ever to finish: the server must end the connection
// before the body is whole, while a request sent at once still works.
func TestServe_TrickledBodyIsCut(t *testing.T) {
	timeoutsFor = func(cfg *config.Config) httpTimeouts {
		d := defaultTimeouts(cfg)
		d.Read = time.Second
		return d
	}
	t.Cleanup(func() { timeoutsFor = defaultTimeouts })
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	at, _ := startServe(t, t.TempDir())
	u, _ := url.Parse(at.ClientURL)

	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const bodySize = 100_000 // 20 ms a byte: over half an hour
	head := "POST /_matrix/client/v3/login HTTP/1.1\r\nHost: " + u.Host +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(bodySize) + "\r\n\r\n{"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	sent := make(chan int, 1)
	stop := make(chan struct{})
	go func() {
		n := 1
		defer func() { sent <- n }()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for ; n < bodySize; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	// Only a server that never cuts the connection reaches this deadline.
	conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatalf("a trickled body was answered 200")
		}
		// Whatever the answer, the connection must be closed after it.
		_, err = conn.Read(make([]byte, 1))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server still held the trickled request after 2 minutes")
	}
	close(stop)
	if n := <-sent; n >= bodySize {
		t.Fatalf("the whole body was sent (%d bytes): nothing cut it", n)
	}
	if res != nil {
		t.Logf("the server answered %s, then closed the connection", res.Status)
	} else {
		t.Logf("the server closed the connection: %v", err)
	}

	r := do(t, http.DefaultClient, "POST", at.ClientURL+"/_matrix/client/v3/login",
		strings.NewReader(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"nobody"},"password":"x"}`),
		map[string]string{"Content-Type": "application/json"})
	if r.status != http.StatusForbidden {
		t.Fatalf("a login sent at once: %d %s, want 403", r.status, r.raw)
	}
}
