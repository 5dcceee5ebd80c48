package roomsapi

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// TestAppendPage: the body of /messages written by hand is what
// json.Marshal makes of the page, key for key and value for value.
func TestAppendPage(t *testing.T) {
	ev := json.RawMessage(`{"content":{"body":"<b>a & b</b> \"q\" \u2028","formatted_body":"<p>x</p>"},"event_id":"$a","type":"m.room.message","unsigned":{"age":1}}`)
	state := json.RawMessage(`{"content":{"membership":"join"},"state_key":"@a:x","type":"m.room.member"}`)
	for _, page := range []rooms.Page{
		{Chunk: []json.RawMessage{}, Start: "t0"},
		{Chunk: nil, Start: "t0"},
		{Chunk: []json.RawMessage{ev}, Start: "t12", End: "t11"},
		{Chunk: []json.RawMessage{ev, ev}, Start: "t12", End: "t10", State: []json.RawMessage{state}},
		{Chunk: []json.RawMessage{ev}, Start: "t1", State: []json.RawMessage{}},
		{Chunk: []json.RawMessage{}, Start: "<&>\"\\"},
	} {
		got := appendPage(nil, page)
		want, err := json.Marshal(page)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: not JSON: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("appendPage:\n%s\njson.Marshal:\n%s", got, want)
		}
		if n := pageSize(page); n < len(got) {
			t.Errorf("pageSize %d, the page is %d bytes", n, len(got))
		}
	}
}
