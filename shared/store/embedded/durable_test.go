package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// crash stops the server as a kill would: no snapshot, the journal's file
// closed as it is.
func (s *Server) crash() {
	s.p.cutMu.Lock() // a snapshot in the background finishes first
	defer s.p.cutMu.Unlock()
	s.http.Close()
	<-s.done
	s.p.log.mu.Lock()
	defer s.p.log.mu.Unlock()
	s.p.log.f.Close()
	s.p.log.err = fmt.Errorf("crashed")
}

// cutNow takes a snapshot at once.
func (s *Server) cutNow(t *testing.T) {
	t.Helper()
	s.p.cutMu.Lock()
	defer s.p.cutMu.Unlock()
	if err := s.p.cut(); err != nil {
		t.Fatal(err)
	}
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func openDir(t *testing.T, dir string, snapshotBytes int64) (*Server, *dynamodb.Client, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	srv, err := Open("127.0.0.1:0", Options{Dir: dir, SnapshotBytes: snapshotBytes, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return srv, client(t, srv.URL()), logs
}

// scan reads every item of the test table, in key order.
func scan(t *testing.T, db *dynamodb.Client) string {
	t.Helper()
	var items []map[string]string
	var start map[string]types.AttributeValue
	for {
		res, err := db.Scan(context.Background(), &dynamodb.ScanInput{TableName: aws.String(testTable), ExclusiveStartKey: start})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range res.Items {
			m := map[string]string{}
			for k, v := range it {
				m[k] = text(v)
			}
			items = append(items, m)
		}
		if len(res.LastEvaluatedKey) == 0 {
			break
		}
		start = res.LastEvaluatedKey
	}
	slices.SortFunc(items, func(a, b map[string]string) int {
		return strings.Compare(a["pk"]+"\x00"+a["sk"], b["pk"]+"\x00"+b["sk"])
	})
	doc, _ := json.Marshal(items)
	return string(doc)
}

// TestOpen_KeepsEveryWrite runs random writes against a durable server and
// the plain stand-in, stops the durable one (cleanly or as a crash, with
// snapshots taken in the background as its small journal limit passes),
// opens it again on its folder, and checks that it holds what the stand-in
// holds and answers every query alike.
func TestOpen_KeepsEveryWrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, db, _ := openDir(t, dir, 4096)
	ref := client(t, plain(t))
	createTable(t, db)
	createTable(t, ref)
	r := rand.New(rand.NewPCG(3, 4))
	for round := range 6 {
		for n := range 150 {
			w := randomWrite(r, round*1000+n)
			errDur, errRef := w(ctx, db), w(ctx, ref)
			if (errDur == nil) != (errRef == nil) {
				t.Fatalf("round %d write %d: durable %v, stand-in %v", round, n, errDur, errRef)
			}
		}
		switch round % 3 {
		case 0:
			srv.crash()
		case 1:
			// A crash in the middle of a snapshot: the journal switched,
			// the snapshot not written.
			srv.p.mu.Lock()
			if _, err := srv.p.log.rotate(); err != nil {
				t.Fatal(err)
			}
			srv.p.mu.Unlock()
			srv.crash()
		default:
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
		}
		srv, db, _ = openDir(t, dir, 4096)
		if got, want := scan(t, db), scan(t, ref); got != want {
			t.Fatalf("after round %d and a restart:\ndurable  %s\nstand-in %s", round, got, want)
		}
		for range 20 {
			in := randomQuery(r)
			got, err := pages(ctx, db, *in)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := pages(ctx, ref, *in)
			if got != want {
				t.Fatalf("after round %d, %s %v: durable %s, stand-in %s", round, *in.KeyConditionExpression, in.ExpressionAttributeValues, got, want)
			}
		}
	}
	defer srv.Close()
	gens, err := journalGenerations(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) > 3 {
		t.Fatalf("journals %v: the old ones were not deleted", gens)
	}
	for _, name := range []string{"snapshot", "snapshot.prev"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("no %s after the snapshots: %v", name, err)
		}
	}
}

func putItems(t *testing.T, db *dynamodb.Client, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		_, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(testTable),
			Item: map[string]types.AttributeValue{"pk": s("p"), "sk": s(fmt.Sprintf("%03d", i)), "v": s(strings.Repeat("v", i))}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// kept makes a folder with a snapshot (generation 2), the one before
// (generation 1) and their journals (journal.1, journal.2), 30 items in
// all, left as a crash leaves it.
func kept(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	srv, db, _ := openDir(t, dir, 1<<30)
	createTable(t, db)
	putItems(t, db, 0, 10)
	srv.cutNow(t)
	putItems(t, db, 10, 20)
	srv.cutNow(t)
	putItems(t, db, 20, 30)
	srv.crash()
	gens, _ := journalGenerations(dir)
	if !slices.Equal(gens, []uint64{1, 2}) {
		t.Fatalf("journals %v, want 1 and 2", gens)
	}
	return dir
}

func wantItems(t *testing.T, db *dynamodb.Client, n int) {
	t.Helper()
	var items []map[string]string
	if err := json.Unmarshal([]byte(scan(t, db)), &items); err != nil {
		t.Fatal(err)
	}
	if len(items) != n {
		t.Fatalf("%d items, want %d", len(items), n)
	}
	for i, it := range items {
		if it["sk"] != fmt.Sprintf("%03d", i) || it["v"] != strings.Repeat("v", i) {
			t.Fatalf("item %d is %v", i, it)
		}
	}
}

// TestOpen_Damage checks what a start makes of damaged files: a torn last
// record is dropped with a warning; anything else is an error that names
// the file, never an empty or partial table.
func TestOpen_Damage(t *testing.T) {
	edit := func(t *testing.T, path string, f func([]byte) []byte) {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// flip changes a byte in the middle of line n (from 1).
	flip := func(n int) func([]byte) []byte {
		return func(data []byte) []byte {
			lines := bytes.SplitAfter(data, []byte("\n"))
			l := lines[n-1]
			l[len(l)/2] ^= 1
			return bytes.Join(lines, nil)
		}
	}
	t.Run("TornLastRecord", func(t *testing.T) {
		dir := kept(t)
		journal := filepath.Join(dir, "journal.2")
		before, _ := os.ReadFile(journal)
		lines := bytes.SplitAfter(before, []byte("\n"))
		last := lines[len(lines)-2]
		edit(t, journal, func(data []byte) []byte { return append(data, last[:len(last)/2]...) })
		srv, db, logs := openDir(t, dir, 1<<30)
		wantItems(t, db, 30)
		if !strings.Contains(logs.String(), "torn last record") || !strings.Contains(logs.String(), journal) {
			t.Fatalf("no warning naming %s about the torn record:\n%s", journal, logs)
		}
		putItems(t, db, 30, 31)
		srv.crash()
		srv, db, logs = openDir(t, dir, 1<<30)
		defer srv.Close()
		wantItems(t, db, 31)
		if strings.Contains(logs.String(), "torn") {
			t.Fatalf("the torn record was not cut off the file:\n%s", logs)
		}
	})
	t.Run("NoSnapshotFallsBackToThePrevious", func(t *testing.T) {
		dir := kept(t)
		if err := os.Remove(filepath.Join(dir, "snapshot")); err != nil {
			t.Fatal(err)
		}
		srv, db, logs := openDir(t, dir, 1<<30)
		defer srv.Close()
		wantItems(t, db, 30)
		if !strings.Contains(logs.String(), "previous") {
			t.Fatalf("no warning about the previous snapshot:\n%s", logs)
		}
	})
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string)
		file    string // named in the error
		message string // also in the error
	}{
		{"EmptySnapshot", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "snapshot"), func([]byte) []byte { return nil })
		}, "snapshot", "empty file"},
		{"TruncatedSnapshot", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "snapshot"), func(d []byte) []byte { return d[:bytes.LastIndexByte(d[:len(d)/2], '\n')+1] })
		}, "snapshot", "cut short"},
		{"DamagedSnapshot", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "snapshot"), flip(5))
		}, "snapshot", "line 5: checksum"},
		{"DamagedJournal", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "journal.2"), flip(3))
		}, "journal.2", "line 3: checksum"},
		{"DamagedEndOfAnOlderJournal", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "snapshot"))
			edit(t, filepath.Join(dir, "journal.1"), func(d []byte) []byte { return d[:len(d)-5] })
		}, "journal.1", "cut short"},
		{"EmptyJournal", func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "journal.2"), func([]byte) []byte { return nil })
		}, "journal.2", "empty file"},
		{"MissingJournal", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "journal.2"))
		}, "journal.2", "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := kept(t)
			tc.damage(t, dir)
			srv, err := Open("127.0.0.1:0", Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				srv.Close()
				t.Fatalf("opened a damaged folder")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tc.file)) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q, want one naming %s and saying %q", err, tc.file, tc.message)
			}
		})
	}
}

// BenchmarkPutItem measures what durability costs a write: PutItems of
// about 300 bytes through the SDK, from memory and with the journal on the
// test's disk, one at a time and 8 at once (group commit).
func BenchmarkPutItem(b *testing.B) {
	for _, durable := range []bool{false, true} {
		for _, senders := range []int{1, 8} {
			name := fmt.Sprintf("memory/senders=%d", senders)
			if durable {
				name = fmt.Sprintf("journal/senders=%d", senders)
			}
			b.Run(name, func(b *testing.B) {
				var srv *Server
				var err error
				if durable {
					srv, err = Open("127.0.0.1:0", Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
				} else {
					srv, err = Start("127.0.0.1:0")
				}
				if err != nil {
					b.Fatal(err)
				}
				defer srv.Close()
				db := dynamodb.New(dynamodb.Options{BaseEndpoint: aws.String(srv.URL()), Region: "local", Credentials: aws.AnonymousCredentials{}})
				createTable(b, db)
				var next sync.Mutex
				i := 0
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							next.Lock()
							n := i
							i++
							next.Unlock()
							if n >= b.N {
								return
							}
							_, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(testTable),
								Item: map[string]types.AttributeValue{"pk": s(fmt.Sprint("p", w)), "sk": s(fmt.Sprint(n)), "v": s(strings.Repeat("x", 300))}})
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if srv.p.log != nil {
					b.ReportMetric(float64(srv.p.log.syncs)/float64(b.N), "fsyncs/op")
				}
			})
		}
	}
}

// BenchmarkJournal measures the journal alone, without HTTP or the
// stand-in: appending one record of a 300-byte item and waiting until it
// is on disk, one writer at a time and 8 at once.
func BenchmarkJournal(b *testing.B) {
	item := json.RawMessage(`{"pk":{"S":"p"},"sk":{"S":"s"},"v":{"S":"` + strings.Repeat("x", 300) + `"}}`)
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			p := newPartitions(nil)
			j, err := p.recover(b.TempDir(), 1<<40, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer j.close()
			var mu sync.Mutex // the partitions' write lock
			var wg sync.WaitGroup
			per := b.N / writers
			b.ResetTimer()
			for range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						mu.Lock()
						seq := j.append(&record{Changes: []change{{Table: "t", Key: map[string]attr{"pk": stringAttr("p")}, Item: item}}})
						mu.Unlock()
						if err := j.wait(seq); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(j.syncs)/float64(per*writers), "fsyncs/op")
		})
	}
}
