package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// legacySnapshot is where `cirrus serve` kept the embedded table before it
// had a journal: one item per line, written every 30 seconds and on stop.
const legacySnapshot = "dynamodb.jsonl"

// tableDir is the folder of the embedded table's snapshots and journals.
func tableDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "dynamodb") }

// importLegacySnapshot writes the items of a snapshot left by an older
// `cirrus serve` into the table, then renames the file to .imported so that
// it is read once. The writes are journaled as any other: a crash during
// the import leaves the file in place, and the next start imports it again
// (the same puts). An empty file is an error, as is a line that is not an
// item: neither is taken for an empty table.
func importLegacySnapshot(ctx context.Context, st *store.Store, path string, logger *slog.Logger) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("import %s: the file is empty, which an older cirrus serve left when it crashed while saving; "+
			"restore it from a backup, or delete it to start with an empty table", path)
	}
	n, err := st.Restore(ctx, f)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	logger.Info("imported the snapshot of an older cirrus serve", "items", n, "from", path, "renamed_to", path+".imported")
	return nil
}
