package embedded

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// A durable server keeps its tables in a folder:
//
//	snapshot        every table and item as of one journal position
//	snapshot.prev   the snapshot before it, kept as a fallback
//	journal.<N>     every change after snapshot N, one record per write request
//
// A write request is applied to the stand-in, its changed items are read
// back and appended to the journal as one record, and the answer waits
// until that record is on disk (fsync). Requests that arrive meanwhile
// share the next fsync (group commit), and every answer, a read's too,
// waits for the records it could reflect: nothing a client was told is
// lost by a crash, and nothing it saw can come back different.
//
// When the journal passes a size, and when the server stops, a snapshot is
// cut: the journal is switched to journal.<N+1> under the write lock, the
// items are copied, and the copy is written to a temporary file, fsynced
// and renamed to snapshot, the old one becoming snapshot.prev; journals
// older than snapshot.prev are then deleted. On start the newest snapshot
// is read and the journals from its generation on are replayed over it.
//
// Every line of both files is a CRC-32C (8 hex digits), a space and a JSON
// document. A torn record at the end of the newest journal is a write the
// crash cut short, never answered: it is dropped, with a warning. Any
// other damage, and an empty or truncated file, is an error that names the
// file: a damaged table is never taken for an empty one.

const (
	snapshotName = "snapshot"
	journalName  = "journal."
	tempPrefix   = ".tmp-"
)

// DefaultSnapshotBytes is the journal size after which a snapshot is cut:
// it bounds the replay of a start.
const DefaultSnapshotBytes = 64 << 20

// record is what one write request changed, the journal's unit: either a
// table or items. Replaying it is idempotent.
type record struct {
	Seq     uint64   `json:"seq"`
	Table   *tableOp `json:"table,omitempty"`
	Changes []change `json:"items,omitempty"`
}

// tableOp is a request that changed a table itself.
type tableOp struct {
	Op    string          `json:"op"` // CreateTable, UpdateTable or DeleteTable
	Table string          `json:"t"`
	Body  json.RawMessage `json:"body"`
}

// change is one item's new value, or its removal when Item is absent.
type change struct {
	Table string          `json:"t"`
	Key   map[string]attr `json:"k"`
	Item  json.RawMessage `json:"i,omitempty"`
}

// snapshotHeader opens a snapshot; snapshotEnd closes it, so that a
// truncated file is known as one.
type snapshotHeader struct {
	Generation uint64 `json:"snapshot"`
	// Seq is the last journal record the snapshot holds.
	Seq    uint64 `json:"seq"`
	Tables int    `json:"tables"`
	Items  int    `json:"items"`
}

type snapshotLine struct {
	Table *tableOp        `json:"table,omitempty"`
	Name  string          `json:"t,omitempty"`
	Item  json.RawMessage `json:"i,omitempty"`
	End   *int            `json:"end,omitempty"`
}

// journalHeader opens a journal: its generation, and the record it
// follows.
type journalHeader struct {
	Generation uint64 `json:"journal"`
	After      uint64 `json:"after"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frame makes one line of a file: CRC, space, JSON, newline.
func frame(doc []byte) []byte {
	line := make([]byte, 0, len(doc)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(doc, castagnoli))
	line = append(line, doc...)
	return append(line, '\n')
}

// unframe checks one line read with its newline and returns its JSON.
func unframe(line []byte) ([]byte, error) {
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return nil, errors.New("line cut short")
	}
	line = line[:len(line)-1]
	if len(line) < 10 || line[8] != ' ' {
		return nil, errors.New("not a checksummed line")
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return nil, errors.New("not a checksummed line")
	}
	doc := line[9:]
	if crc32.Checksum(doc, castagnoli) != uint32(want) {
		return nil, errors.New("checksum mismatch")
	}
	return doc, nil
}

// journal appends records to the open journal file and makes them durable
// in groups. A nil journal keeps nothing.
type journal struct {
	dir    string
	logger *slog.Logger
	limit  int64 // bytes after which a snapshot is cut

	mu       sync.Mutex
	flushed  *sync.Cond
	f        *os.File
	gen      uint64 // generation of f
	size     int64  // bytes in f, pending included
	pending  []byte // records appended, not yet written
	seq      uint64 // last record appended
	synced   uint64 // last record on disk
	flushing bool
	err      error // the first failure: every later request fails
	// syncs counts fsyncs, for the benchmark.
	syncs uint64
	// cutAt is the size of f past which a snapshot is cut: limit, or
	// more after a snapshot failed, so that it is not tried at each
	// request.
	cutAt int64
}

// last returns the last record appended: a read sees it.
func (j *journal) last() uint64 {
	if j == nil {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// broken returns the failure that stopped the journal, if any.
func (j *journal) broken() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// append numbers r and queues it for the disk; it returns the number to
// wait for, or the last one when r is nil. Callers hold the partitions'
// write lock, so records are in the order their writes were applied.
func (j *journal) append(r *record) uint64 {
	if j == nil {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if r == nil || j.err != nil {
		return j.seq
	}
	r.Seq = j.seq + 1
	doc, err := json.Marshal(r)
	if err != nil {
		j.fail(fmt.Errorf("journal: encode record: %w", err))
		return j.seq
	}
	line := frame(doc)
	j.seq = r.Seq
	j.pending = append(j.pending, line...)
	j.size += int64(len(line))
	return j.seq
}

// wait returns once record seq is on disk. The first waiter writes and
// fsyncs everything pending; those who come meanwhile wait for it, then
// one of them writes what they appended, in one fsync.
func (j *journal) wait(seq uint64) error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.synced < seq && j.err == nil {
		if j.flushing {
			j.flushed.Wait()
			continue
		}
		j.flushing = true
		buf, upto, f := j.pending, j.seq, j.f
		j.pending = nil
		j.mu.Unlock()
		_, err := f.Write(buf)
		if err == nil {
			err = f.Sync()
		}
		j.mu.Lock()
		j.flushing = false
		if err != nil {
			j.fail(fmt.Errorf("journal %s: %w", f.Name(), err))
		} else {
			j.synced = upto
			j.syncs++
		}
		j.flushed.Broadcast()
	}
	return j.err
}

// fail stops the journal for good: what the stand-in holds may now differ
// from the disk, so nothing more is answered. j.mu is held.
func (j *journal) fail(err error) {
	if j.err == nil {
		j.err = err
		j.logger.Error("embedded dynamodb: journal failed; every request now fails until a restart", "err", err)
	}
}

// rotate makes every appended record durable and opens journal.<gen+1>
// for the next ones; it returns the last record of the old journal.
// Callers hold the partitions' write lock, so no record is appended
// meanwhile.
func (j *journal) rotate() (uint64, error) {
	if err := j.wait(j.last()); err != nil {
		return 0, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	f, size, err := createJournal(j.dir, j.gen+1, j.seq)
	if err != nil {
		return 0, err
	}
	j.f.Close()
	j.f, j.gen, j.size, j.cutAt = f, j.gen+1, size, j.limit
	return j.seq, nil
}

// overLimit reports whether the open journal has grown past its limit.
func (j *journal) overLimit() bool {
	if j == nil {
		return false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err == nil && j.size > j.cutAt
}

// postpone puts the next snapshot off by another limit's worth of journal.
func (j *journal) postpone() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.cutAt = j.size + j.limit
}

func (j *journal) close() error {
	if j == nil {
		return nil
	}
	err := j.wait(j.last())
	j.mu.Lock()
	defer j.mu.Unlock()
	return errors.Join(err, j.f.Close())
}

// createJournal makes journal.<gen> holding only its header, through a
// temporary file renamed into place, so a journal file is never empty; it
// returns it open for appending.
func createJournal(dir string, gen, after uint64) (*os.File, int64, error) {
	doc, _ := json.Marshal(journalHeader{Generation: gen, After: after})
	head := frame(doc)
	path := filepath.Join(dir, journalName+strconv.FormatUint(gen, 10))
	if err := writeFileSync(path, func(w io.Writer) error { _, err := w.Write(head); return err }); err != nil {
		return nil, 0, fmt.Errorf("create journal: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("create journal: %w", err)
	}
	return f, int64(len(head)), nil
}

// writeFileSync writes path through a temporary file in its folder:
// written, fsynced, renamed over path, and the folder fsynced, so that path
// holds either its old content or all of the new.
func writeFileSync(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes renames and new files in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// state is a copy of the tables, taken under the write lock, written out
// without it.
type state struct {
	gen, seq uint64
	tables   map[string]*table
}

// maybeCut starts a snapshot in the background when the journal has grown
// past its limit and none is being taken.
func (p *partitions) maybeCut() {
	if !p.log.overLimit() || !p.cutMu.TryLock() {
		return
	}
	go func() {
		defer p.cutMu.Unlock()
		if err := p.cut(); err != nil {
			p.log.postpone()
			p.log.logger.Error("embedded dynamodb: snapshot failed; the journal keeps every write", "err", err)
		}
	}()
}

// cut takes a snapshot: the next generation's journal is opened and the
// items copied under the write lock; the file is written after it.
func (p *partitions) cut() error {
	p.mu.Lock()
	seq, err := p.log.rotate()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	st := state{gen: p.log.gen, seq: seq, tables: make(map[string]*table, len(p.tables))}
	for name, t := range p.tables {
		c := *t
		c.defs = slices.Clone(t.defs)
		c.items = maps.Clone(t.items)
		c.keys = nil
		st.tables[name] = &c
	}
	p.mu.Unlock()
	return writeSnapshot(p.log.dir, st, p.log.logger)
}

// writeSnapshot writes st as the new snapshot, keeps the old one as
// snapshot.prev, and deletes the journals older than that one.
func writeSnapshot(dir string, st state, logger *slog.Logger) error {
	path := filepath.Join(dir, snapshotName)
	prevGen, hadPrev, err := snapshotGeneration(path)
	if err != nil {
		return err
	}
	tmpPath := filepath.Join(dir, tempPrefix+snapshotName)
	items := 0
	err = writeFileSync(tmpPath, func(w io.Writer) error {
		names := slices.Sorted(maps.Keys(st.tables))
		defs := 0
		for _, name := range names {
			defs += len(st.tables[name].defs)
			items += len(st.tables[name].items)
		}
		put := func(v any) error {
			doc, err := json.Marshal(v)
			if err != nil {
				return err
			}
			_, err = w.Write(frame(doc))
			return err
		}
		if err := put(snapshotHeader{Generation: st.gen, Seq: st.seq, Tables: defs, Items: items}); err != nil {
			return err
		}
		for _, name := range names {
			for _, d := range st.tables[name].defs {
				if err := put(snapshotLine{Table: &d}); err != nil {
					return err
				}
			}
		}
		for _, name := range names {
			t := st.tables[name]
			for _, id := range slices.Sorted(maps.Keys(t.items)) {
				if err := put(snapshotLine{Name: name, Item: t.items[id]}); err != nil {
					return err
				}
			}
		}
		return put(snapshotLine{End: &items})
	})
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if hadPrev {
		if err := os.Rename(path, path+".prev"); err != nil {
			return fmt.Errorf("keep the previous snapshot: %w", err)
		}
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	logger.Info("embedded dynamodb: snapshot written", "file", path, "generation", st.gen, "items", items)
	if !hadPrev {
		return nil
	}
	// Replaying snapshot.prev needs the journals from its generation on.
	gens, err := journalGenerations(dir)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g < prevGen {
			if err := os.Remove(filepath.Join(dir, journalName+strconv.FormatUint(g, 10))); err != nil {
				return fmt.Errorf("delete an old journal: %w", err)
			}
		}
	}
	return nil
}

// snapshotGeneration reads the generation in the header of the snapshot at
// path; ok is false when there is none.
func snapshotGeneration(path string) (gen uint64, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	var h snapshotHeader
	doc, err := unframe(line)
	if err == nil {
		err = json.Unmarshal(doc, &h)
	}
	if err != nil {
		return 0, false, fmt.Errorf("%s: header: %w", path, err)
	}
	return h.Generation, true, nil
}

// journalGenerations lists the journals in dir, oldest first.
func journalGenerations(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), journalName)
		if !ok {
			continue
		}
		g, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: not a journal name", filepath.Join(dir, e.Name()))
		}
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return gens, nil
}

// recover loads the tables from dir into the copy and the stand-in, and
// returns the journal open for the next records.
func (p *partitions) recover(dir string, limit int64, logger *slog.Logger) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			// A snapshot or journal the last run did not finish writing.
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}

	var base snapshotHeader
	from := ""
	path := filepath.Join(dir, snapshotName)
	for _, candidate := range []string{path, path + ".prev"} {
		_, err := os.Stat(candidate)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		from = candidate
		break
	}
	if from == path+".prev" {
		logger.Warn("embedded dynamodb: no snapshot; starting from the previous one and its journals", "file", from)
	}
	if from != "" {
		if base, err = p.readSnapshot(from); err != nil {
			hint := ""
			if from == path {
				hint = fmt.Sprintf(" (move it aside to start from %s.prev and the journals after it)", path)
			}
			return nil, fmt.Errorf("%s: %w%s", from, err, hint)
		}
	}

	gens, err := journalGenerations(dir)
	if err != nil {
		return nil, err
	}
	gens = slices.DeleteFunc(gens, func(g uint64) bool { return g < base.Generation })
	switch {
	case from == "" && len(gens) == 0:
		// A new folder: an empty database.
	case len(gens) == 0 || gens[0] != base.Generation:
		name := filepath.Join(dir, journalName+strconv.FormatUint(base.Generation, 10))
		if from == "" {
			return nil, fmt.Errorf("%s is missing, and no snapshot holds the writes before the journals in %s", name, dir)
		}
		return nil, fmt.Errorf("%s is missing: it holds the writes after %s", name, from)
	}
	next := base.Seq
	for i, g := range gens {
		if i > 0 && g != gens[i-1]+1 {
			return nil, fmt.Errorf("%s is missing", filepath.Join(dir, journalName+strconv.FormatUint(gens[i-1]+1, 10)))
		}
		name := filepath.Join(dir, journalName+strconv.FormatUint(g, 10))
		if next, err = p.replay(name, g, next, i == len(gens)-1, logger); err != nil {
			return nil, err
		}
	}

	j := &journal{dir: dir, logger: logger, limit: limit, cutAt: limit, seq: next, synced: next}
	j.flushed = sync.NewCond(&j.mu)
	if len(gens) == 0 {
		j.f, j.size, err = createJournal(dir, base.Generation, next)
		j.gen = base.Generation
	} else {
		j.gen = gens[len(gens)-1]
		name := filepath.Join(dir, journalName+strconv.FormatUint(j.gen, 10))
		j.f, err = os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			var fi os.FileInfo
			if fi, err = j.f.Stat(); err == nil {
				j.size = fi.Size()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := p.load(); err != nil {
		j.f.Close()
		return nil, err
	}
	items := 0
	for _, t := range p.tables {
		items += len(t.items)
	}
	logger.Info("embedded dynamodb: tables restored", "folder", dir, "snapshot", from,
		"journals", len(gens), "records", next-base.Seq, "items", items)
	return j, nil
}

// readSnapshot reads a snapshot into the copy.
func (p *partitions) readSnapshot(path string) (snapshotHeader, error) {
	var h snapshotHeader
	f, err := os.Open(path)
	if err != nil {
		return h, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	n := 0
	next := func(v any) error {
		n++
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			if n == 1 {
				return errors.New("empty file")
			}
			return fmt.Errorf("cut short after line %d", n-1)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		doc, err := unframe(line)
		if err == nil {
			err = json.Unmarshal(doc, v)
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		return nil
	}
	if err := next(&h); err != nil {
		return h, err
	}
	if h.Generation == 0 {
		return h, errors.New("line 1: not a snapshot header")
	}
	for range h.Tables {
		var l snapshotLine
		if err := next(&l); err != nil {
			return h, err
		}
		if l.Table == nil {
			return h, fmt.Errorf("line %d: want a table", n)
		}
		if err := p.applyTable(*l.Table); err != nil {
			return h, fmt.Errorf("line %d: %w", n, err)
		}
	}
	for range h.Items {
		var l snapshotLine
		if err := next(&l); err != nil {
			return h, err
		}
		t, ok := p.tables[l.Name]
		var item map[string]attr
		if !ok || json.Unmarshal(l.Item, &item) != nil {
			return h, fmt.Errorf("line %d: not an item of a known table", n)
		}
		t.set(t.key(item), l.Item)
	}
	var end snapshotLine
	if err := next(&end); err != nil {
		return h, err
	}
	if end.End == nil || *end.End != h.Items {
		return h, fmt.Errorf("line %d: want the end of %d items", n, h.Items)
	}
	if rest, _ := r.Peek(1); len(rest) > 0 {
		return h, fmt.Errorf("more after the end, line %d", n)
	}
	return h, nil
}

// replay applies the records of journal file name (generation gen) that
// follow record after, and returns the last one applied. In the newest
// journal (last), a damaged tail with nothing valid after it is a record
// the crash cut short: it is dropped and cut off the file.
func (p *partitions) replay(name string, gen, after uint64, last bool, logger *slog.Logger) (uint64, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return after, err
	}
	if len(data) == 0 {
		return after, fmt.Errorf("%s: empty file", name)
	}
	off, n := 0, 0
	seq := after
	for off < len(data) {
		n++
		end := bytes.IndexByte(data[off:], '\n')
		line := data[off:]
		if end >= 0 {
			line = data[off : off+end+1]
		}
		doc, err := unframe(line)
		var r record
		if err == nil && n > 1 {
			err = json.Unmarshal(doc, &r)
		}
		if err != nil {
			if n == 1 || !last || validLineAfter(data[off+len(line):]) {
				return after, fmt.Errorf("%s: line %d: %w", name, n, err)
			}
			logger.Warn("embedded dynamodb: dropped the torn last record of the journal, a write the crash cut short and never answered",
				"file", name, "line", n, "bytes", len(data)-off)
			if err := os.Truncate(name, int64(off)); err != nil {
				return after, err
			}
			return seq, syncFile(name)
		}
		off += len(line)
		if n == 1 {
			var h journalHeader
			if err := json.Unmarshal(doc, &h); err != nil || h.Generation != gen {
				return after, fmt.Errorf("%s: line 1: not the header of journal %d", name, gen)
			}
			if h.After > after {
				return after, fmt.Errorf("%s: starts after record %d, but the records before end at %d", name, h.After, after)
			}
			continue
		}
		if r.Seq <= seq {
			if r.Seq > after {
				return after, fmt.Errorf("%s: line %d: record %d after record %d", name, n, r.Seq, seq)
			}
			continue // the snapshot holds it
		}
		if r.Seq != seq+1 {
			return after, fmt.Errorf("%s: line %d: record %d follows record %d: the records between are missing", name, n, r.Seq, seq)
		}
		if err := p.apply(r); err != nil {
			return after, fmt.Errorf("%s: line %d: %w", name, n, err)
		}
		seq = r.Seq
	}
	return seq, nil
}

// validLineAfter reports whether rest holds a whole checksummed line, which
// a torn tail would not.
func validLineAfter(rest []byte) bool {
	for len(rest) > 0 {
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			return false
		}
		if _, err := unframe(rest[:end+1]); err == nil {
			return true
		}
		rest = rest[end+1:]
	}
	return false
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// apply applies a journal record to the copy.
func (p *partitions) apply(r record) error {
	if r.Table != nil {
		return p.applyTable(*r.Table)
	}
	for _, c := range r.Changes {
		t, ok := p.tables[c.Table]
		if !ok {
			return fmt.Errorf("record %d changes an item of table %q, which does not exist", r.Seq, c.Table)
		}
		t.set(c.Key, c.Item)
	}
	return nil
}

// load puts the copy into the empty stand-in: each table as it was made,
// then its items, 25 to a batch.
func (p *partitions) load() error {
	for _, name := range slices.Sorted(maps.Keys(p.tables)) {
		t := p.tables[name]
		for _, d := range t.defs {
			if err := p.call(d.Op, d.Body); err != nil {
				return fmt.Errorf("restore table %s: %w", name, err)
			}
		}
		var batch []json.RawMessage
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			reqs := make([]map[string]map[string]json.RawMessage, len(batch))
			for i, item := range batch {
				reqs[i] = map[string]map[string]json.RawMessage{"PutRequest": {"Item": item}}
			}
			body, _ := json.Marshal(map[string]any{"RequestItems": map[string]any{name: reqs}})
			batch = batch[:0]
			return p.call("BatchWriteItem", body)
		}
		for _, item := range t.loadOrder() {
			batch = append(batch, item)
			if len(batch) == 25 {
				if err := flush(); err != nil {
					return fmt.Errorf("restore table %s: %w", name, err)
				}
			}
		}
		if err := flush(); err != nil {
			return fmt.Errorf("restore table %s: %w", name, err)
		}
	}
	return nil
}

// loadOrder lists the items in the order of the stand-in's keys (the hash
// key's text, a dot, the range key's): it sorts its keys again at each new
// one, which is quick only for keys that come in order.
func (t *table) loadOrder() []json.RawMessage {
	type entry struct {
		order string
		item  json.RawMessage
	}
	entries := make([]entry, 0, len(t.items))
	for _, item := range t.items {
		var m map[string]attr
		json.Unmarshal(item, &m)
		_, h, _ := m[t.hash].scalar()
		_, r, _ := m[t.rng].scalar()
		entries = append(entries, entry{h + "." + r, item})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.order, b.order) })
	out := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		out[i] = e.item
	}
	return out
}

// call sends one request to the stand-in in-process.
func (p *partitions) call(op string, body []byte) error {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810."+op)
	rec := httptest.NewRecorder()
	p.next.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("%s: %d %s", op, rec.Code, bytes.TrimSpace(rec.Body.Bytes()))
	}
	return nil
}
