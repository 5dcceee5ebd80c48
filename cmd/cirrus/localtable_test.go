package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// TestServe_ImportsAnOlderSnapshot starts `cirrus serve` on a data folder
// an older version left, with the table in dynamodb.jsonl: its items are
// imported once, and the file is renamed.
func TestServe_ImportsAnOlderSnapshot(t *testing.T) {
	ctx := context.Background()
	db, err := embedded.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	old, err := store.Open(ctx, store.Options{Table: "old", Endpoint: db.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Put(ctx, note{PK: "test|legacy", SK: "n", Text: "from an older version"}); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := old.Snapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	legacy := filepath.Join(dir, "dynamodb.jsonl")
	if err := os.WriteFile(legacy, snap.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")

	for run := range 2 { // imported, then kept in the journal and snapshots
		at, stop := startServe(t, dir)
		st, err := store.Open(ctx, store.Options{Table: "cirrus", Endpoint: at.DynamoDBURL})
		if err != nil {
			t.Fatal(err)
		}
		var got note
		if err := st.Get(ctx, store.Key{PK: "test|legacy", SK: "n"}, &got); err != nil || got.Text != "from an older version" {
			t.Fatalf("run %d: the older snapshot's item: %+v, %v", run, got, err)
		}
		stop()
		if _, err := os.Stat(legacy); !os.IsNotExist(err) {
			t.Fatalf("run %d: %s is still there (%v)", run, legacy, err)
		}
		if _, err := os.Stat(legacy + ".imported"); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
}

// TestServe_DamagedTableStops checks that `cirrus serve` refuses to start
// on a damaged or empty table file, naming it, rather than serve an empty
// table.
func TestServe_DamagedTableStops(t *testing.T) {
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	t.Setenv("CIRRUS_CLIENT_LISTEN", "127.0.0.1:0")
	t.Setenv("CIRRUS_FEDERATION_LISTEN", "127.0.0.1:0")
	for _, tc := range []struct {
		name, file string
	}{
		{"EmptySnapshot", filepath.Join("dynamodb", "snapshot")},
		{"EmptyJournal", filepath.Join("dynamodb", "journal.0")},
		{"EmptyOlderSnapshot", "dynamodb.jsonl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("CIRRUS_DATA_DIR", dir)
			path := filepath.Join(dir, tc.file)
			os.MkdirAll(filepath.Dir(path), 0o700)
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			err := serve(context.Background(), nil, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "empty") {
				t.Fatalf("serve with an empty %s: %v, want an error naming it", tc.file, err)
			}
		})
	}
}
