package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// localTable keeps the embedded table across restarts: a snapshot written
// through the DynamoDB API to the data folder, restored on start.
type localTable struct {
	path   string
	store  *store.Store
	logger *slog.Logger
}

func (t *localTable) restore(ctx context.Context) error {
	f, err := os.Open(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore table: %w", err)
	}
	defer f.Close()
	n, err := t.store.Restore(ctx, f)
	if err != nil {
		return fmt.Errorf("restore table from %s: %w", t.path, err)
	}
	t.logger.Info("table restored", "items", n, "from", t.path)
	return nil
}

// save writes the snapshot to a temporary file and renames it over the old
// one, so that a crash mid-write never leaves a torn snapshot.
func (t *localTable) save(ctx context.Context) error {
	tmp, err := os.CreateTemp(filepath.Dir(t.path), ".dynamodb-*.jsonl")
	if err != nil {
		return fmt.Errorf("snapshot table: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, err := t.store.Snapshot(ctx, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), t.path)
	}
	if err != nil {
		t.logger.Error("snapshot failed", "err", err)
		return fmt.Errorf("snapshot table: %w", err)
	}
	t.logger.Debug("table saved", "items", n, "to", t.path)
	return nil
}
