package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

func TestReadLog(t *testing.T) {
	s := &cirrusServer{logged: map[string]usage{}}
	log := `not json
{"level":"INFO","msg":"table restored","items":0}
{"level":"INFO","msg":"request","request_id":"abc","route":"GET /x","status":200,"dynamodb":{"calls":2,"rcu":1.5,"wcu":0}}
`
	s.readLog(strings.NewReader(log))
	u, ok := s.usage("abc")
	if !ok || u.Calls != 2 || u.RCU != 1.5 {
		t.Fatalf("usage(abc) = %+v, %v", u, ok)
	}
	if _, ok := s.usage("table"); ok || len(s.logged) != 1 {
		t.Fatalf("non-request lines were kept: %v", s.logged)
	}
}
