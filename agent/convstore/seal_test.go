package convstore

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawDB opens the store's file in dir through a second connection: the
// host's view, changing rows behind the store's back.
func rawDB(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func rawExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// dbFile returns the database file of a closed store, whose WAL Close
// has checkpointed into it.
func dbFile(t *testing.T, dir string) []byte {
	t.Helper()
	if fi, err := os.Stat(filepath.Join(dir, FileName+"-wal")); err == nil && fi.Size() > 0 {
		t.Fatalf("the WAL holds %d bytes after Close", fi.Size())
	}
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putFile(t *testing.T, dir string, b []byte) {
	t.Helper()
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(filepath.Join(dir, FileName+suffix)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t testing.TB, s *Store, title string, contents ...string) *Summary {
	t.Helper()
	var msgs []Message
	for _, c := range contents {
		msgs = append(msgs, Message{Role: "user", Content: c})
	}
	c, _, err := s.Create(ctx, alice, title, "tiny", msgs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantTampered(t *testing.T, err error, what string) {
	t.Helper()
	if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), what) {
		t.Fatalf("error = %v, want ErrTampered saying %q", err, what)
	}
}

// twoStates stores conversations gone and kept, closes the store and
// returns the database file then (old); then it deletes gone, appends to
// kept, creates another and closes the store again, at generation gen.
func twoStates(t *testing.T, dir string) (old []byte, gone, kept *Summary, gen uint64) {
	t.Helper()
	s := open(t, dir)
	gone = mustCreate(t, s, "to delete", "first secret", strings.Repeat("x", 5000))
	kept = mustCreate(t, s, "kept", "hello")
	s.Close()
	old = dbFile(t, dir)

	s = open(t, dir)
	defer s.Close()
	if _, err := s.Delete(ctx, alice, gone.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, alice, kept.ID, "", Message{Role: "user", Content: "recent"}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "new", "newest")
	gen, err := s.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return old, gone, kept, gen
}

// The host puts back the old copy of every page a delete, an append and a
// create changed, except the page holding the meta row: SQLite opens the
// result, with the deleted conversation back and the generation current.
// Open must refuse it. (Before the store digest, it opened.)
func TestPartialRollbackAtRest(t *testing.T) {
	dir := t.TempDir()
	old, gone, kept, gen := twoStates(t, dir)
	cur := dbFile(t, dir)

	raw := rawDB(t, dir)
	var pageSize int
	if err := raw.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	metaPages := map[int]bool{}
	rows, err := raw.Query("SELECT pageno FROM dbstat WHERE name = 'meta'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int
		rows.Scan(&p)
		metaPages[p] = true
	}
	rows.Close()
	raw.Close()
	if len(metaPages) == 0 {
		t.Fatal("found no page of the meta table")
	}
	rolled := bytes.Clone(cur)
	restored := 0
	for off := 0; off+pageSize <= len(old) && off+pageSize <= len(cur); off += pageSize {
		if metaPages[off/pageSize+1] || bytes.Equal(old[off:off+pageSize], cur[off:off+pageSize]) {
			continue
		}
		copy(rolled[off:], old[off:off+pageSize])
		restored++
	}
	if restored == 0 {
		t.Fatal("no page to roll back")
	}
	putFile(t, dir, rolled)

	// The attack works on SQLite: the deleted conversation is back, the
	// recent message gone, the generation current.
	raw = rawDB(t, dir)
	var n, msgs int
	var g uint64
	if err := raw.QueryRow("SELECT (SELECT count(*) FROM conversations WHERE id = ?), (SELECT messages FROM conversations WHERE id = ?), (SELECT value FROM meta WHERE key = 'generation')",
		gone.ID, kept.ID).Scan(&n, &msgs, &g); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if n != 1 || msgs != 1 || g != gen {
		t.Fatalf("rolled back %d pages: deleted conversation present %d, kept has %d messages, generation %d (want 1, 1, %d)", restored, n, msgs, g, gen)
	}

	_, err = Open(dir)
	wantTampered(t, err, "store digest does not match the rows")
}

// Rows changed behind the store's back while it was closed: Open refuses.
func TestTamperAtRest(t *testing.T) {
	for _, tc := range []struct {
		name, change, what string
	}{
		{"message content", "UPDATE messages SET content = 'forged' WHERE seq = 1", "do not match its digest"},
		{"message removed", "DELETE FROM messages WHERE seq = 1", "do not match its digest"},
		{"title", "UPDATE conversations SET title = 'forged'", "do not match its digest"},
		{"conversation removed", "DELETE FROM messages; DELETE FROM conversations", "store digest does not match the rows"},
		{"orphan messages", "DELETE FROM conversations", "messages of a conversation that does not exist"},
		{"generation", "UPDATE meta SET value = value + 5 WHERE key = 'generation'", "store digest does not match the rows"},
		{"digest column", "ALTER TABLE conversations DROP COLUMN digest", "lost its digest column"},
		// Without its digest row the store was resealed from whatever rows
		// the host left: a forged message at generation 0 opened.
		{"digest row", "DELETE FROM meta WHERE key = 'digest'", "has no store digest"},
		{"digest row and forged content", "DELETE FROM meta WHERE key = 'digest'; UPDATE messages SET content = 'forged' WHERE seq = 1; UPDATE meta SET value = 0 WHERE key = 'generation'",
			"has no store digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			mustCreate(t, s, "t", "one", "two")
			s.Close()
			raw := rawDB(t, dir)
			rawExec(t, raw, tc.change)
			raw.Close()
			_, err := Open(dir)
			wantTampered(t, err, tc.what)
		})
	}
}

// sqlChange returns a change that runs q ({id}: the conversation's id)
// through the second connection.
func sqlChange(q string) func(*testing.T, *Store, *sql.DB, string) {
	return func(t *testing.T, _ *Store, raw *sql.DB, id string) {
		rawExec(t, raw, strings.ReplaceAll(q, "{id}", id))
	}
}

// bringBack deletes the conversation through the store, then puts its row
// back through the second connection, as a page re-read from an older disk
// would.
func bringBack(t *testing.T, s *Store, raw *sql.DB, id string) {
	const cols = "id, owner, title, model, created, updated, messages, digest"
	vals := make([]any, 8)
	ptrs := make([]any, 8)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := raw.QueryRow("SELECT "+cols+" FROM conversations WHERE id = ?", id).Scan(ptrs...); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, alice, id); err != nil {
		t.Fatal(err)
	}
	rawExec(t, raw, "INSERT INTO conversations("+cols+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)", vals...)
}

// Rows changed while the store is open (pages re-read from a disk the host
// rolled back): the read that meets them fails, returns no data, writes
// nothing, and every later call fails too.
func TestTamperWhileOpen(t *testing.T) {
	get := func(s *Store, id string) (any, error) { return s.Get(ctx, alice, id) }
	list := func(s *Store, id string) (any, error) { return s.List(ctx, alice) }
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, s *Store, raw *sql.DB, id string)
		op     func(s *Store, id string) (any, error)
		what   string
	}{
		{"get content", sqlChange("UPDATE messages SET content = 'forged' WHERE conversation = '{id}' AND seq = 1"),
			get, "messages do not match its digest"},
		{"get title", sqlChange("UPDATE conversations SET title = 'forged' WHERE id = '{id}'"),
			get, "row does not match its digest"},
		{"get removed", sqlChange("DELETE FROM messages WHERE conversation = '{id}'; DELETE FROM conversations WHERE id = '{id}'"),
			get, "is missing from the database"},
		{"get brought back", bringBack, get, "a deleted conversation brought back"},
		{"list title", sqlChange("UPDATE conversations SET title = 'forged' WHERE id = '{id}'"),
			list, "row does not match its digest"},
		{"list removed", sqlChange("DELETE FROM messages WHERE conversation = '{id}'; DELETE FROM conversations WHERE id = '{id}'"),
			list, "lists 1 of the owner's conversations, the agent keeps 2"},
		{"list brought back", bringBack, list, "a deleted conversation brought back"},
		{"append removed message", sqlChange("DELETE FROM messages WHERE conversation = '{id}' AND seq = 1"),
			func(s *Store, id string) (any, error) {
				return s.Append(ctx, alice, id, "", Message{Role: "user", Content: "more"})
			}, "messages do not match its digest"},
		{"delete title", sqlChange("UPDATE conversations SET title = 'forged' WHERE id = '{id}'"),
			func(s *Store, id string) (any, error) { return s.Delete(ctx, alice, id) }, "row does not match its digest"},
		{"generation", sqlChange("UPDATE meta SET value = value - 1 WHERE key = 'generation'"),
			func(s *Store, id string) (any, error) { return s.Generation(ctx) }, "the generation in the database is 1, the agent last wrote 2"},
		{"create after generation", sqlChange("UPDATE meta SET value = value - 1 WHERE key = 'generation'"),
			func(s *Store, id string) (any, error) {
				c, _, err := s.Create(ctx, alice, "x", "", nil)
				return c, err
			}, "the generation in the database is 1, the agent last wrote 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			defer s.Close()
			c := mustCreate(t, s, "t", "one", "two")
			mustCreate(t, s, "other", "three")
			raw := rawDB(t, dir)
			defer raw.Close()
			tc.change(t, s, raw, c.ID)
			var g0 uint64
			if err := raw.QueryRow("SELECT value FROM meta WHERE key = 'generation'").Scan(&g0); err != nil {
				t.Fatal(err)
			}
			v, err := tc.op(s, c.ID)
			wantTampered(t, err, tc.what)
			if !reflect.ValueOf(v).IsZero() {
				t.Fatalf("returned %+v with the error", v)
			}
			if _, err := s.List(ctx, alice); !errors.Is(err, ErrTampered) {
				t.Fatalf("list after the tamper error: %v", err)
			}
			var g1 uint64
			if err := raw.QueryRow("SELECT value FROM meta WHERE key = 'generation'").Scan(&g1); err != nil || g1 != g0 {
				t.Fatalf("generation %d after a refused call, %d before (%v)", g1, g0, err)
			}
		})
	}
}

// Replaying the whole volume gives a consistent older store: it opens and
// reports the older generation, which the client's floor catches.
func TestWholeVolumeReplayOpens(t *testing.T) {
	dir := t.TempDir()
	old, gone, kept, _ := twoStates(t, dir)
	putFile(t, dir, old)
	s := open(t, dir)
	defer s.Close()
	if g, err := s.Generation(ctx); err != nil || g != 2 {
		t.Fatalf("generation after replay = %d, %v; want the old 2", g, err)
	}
	if c, err := s.Get(ctx, alice, gone.ID); err != nil || len(c.Messages) != 2 {
		t.Fatalf("replayed conversation: %+v, %v", c, err)
	}
	if c, err := s.Get(ctx, alice, kept.ID); err != nil || len(c.Messages) != 1 {
		t.Fatalf("replayed conversation: %+v, %v", c, err)
	}
}

// An empty file (what a fresh volume gives, or no file at all) is a new
// database, at generation 0.
func TestEmptyFileIsNew(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	if g, err := s.Generation(ctx); err != nil || g != 0 {
		t.Fatalf("generation of a new database = %d, %v", g, err)
	}
	mustCreate(t, s, "t", "one")
	s.Close()
	open(t, dir).Close()
}

// bigStore makes a store in dir with n conversations (over n/1000+1
// owners) of m messages each, written through a second connection and
// sealed as the store would have.
func bigStore(b testing.TB, dir string, n, m int) {
	open(b, dir).Close()
	db := rawDB(b, dir)
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	content := strings.Repeat("m", 500)
	var convs []row
	for i := range n {
		r := row{Summary{ID: fmt.Sprintf("%032x", i), Title: "t", Model: "tiny", Created: 1, Updated: 1, Messages: m}, Owner(fmt.Sprint(i / 1000))}
		convs = append(convs, r)
		if _, err := tx.Exec("INSERT INTO conversations(id, owner, title, model, created, updated, messages) VALUES (?, ?, ?, ?, ?, ?, ?)",
			r.ID, r.Owner, r.Title, r.Model, r.Created, r.Updated, r.Messages); err != nil {
			b.Fatal(err)
		}
		for j := range m {
			if _, err := tx.Exec("INSERT INTO messages VALUES (?, ?, 'user', ?, 1)", r.ID, j, content); err != nil {
				b.Fatal(err)
			}
		}
	}
	hashes, err := messageHashes(ctx, tx, convs)
	if err != nil {
		b.Fatal(err)
	}
	s := &Store{convs: map[string]entry{}, perOwner: map[string]int{}}
	for i, r := range convs {
		e := newEntry(r, hashes[i])
		if _, err := tx.Exec("UPDATE conversations SET digest = ? WHERE id = ?", e.conv[:], r.ID); err != nil {
			b.Fatal(err)
		}
		s.set(r.ID, &e)
	}
	sum := s.storeDigest(0)
	if _, err := tx.Exec("UPDATE meta SET value = ? WHERE key = 'digest'", sum[:]); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// The store digest every write recomputes, at 10,000 conversations.
func BenchmarkStoreDigest10k(b *testing.B) {
	dir := b.TempDir()
	bigStore(b, dir, 10000, 0)
	s := open(b, dir)
	defer s.Close()
	b.ResetTimer()
	for range b.N {
		s.storeDigest(s.gen)
	}
}

// A whole write (an Append of one message to a conversation of 20, its
// fsyncs included) at 10 and at 10,000 conversations: the difference is
// the store digest's cost.
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			dir := b.TempDir()
			bigStore(b, dir, n, 20)
			s := open(b, dir)
			defer s.Close()
			appendEach(b, s, nil, 900)
		})
	}
}

// Open's check of 1,000 conversations of 20 messages (500 bytes each).
func BenchmarkOpen1000x20(b *testing.B) {
	dir := b.TempDir()
	bigStore(b, dir, 1000, 20)
	open(b, dir).Close()
	b.ResetTimer()
	for range b.N {
		open(b, dir).Close()
	}
}

// An Append to a conversation of 600 messages of 8 KiB. It reads only the
// row and extends the running hash it keeps; before, it re-read and
// re-hashed the whole conversation (12.5 ms here).
func BenchmarkAppendLong(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	msgs := make([]Message, 600)
	for i := range msgs {
		msgs[i] = Message{Role: "user", Content: strings.Repeat("m", 8<<10)}
	}
	appendEach(b, s, msgs, 300)
}

// appendEach times b.N Appends of one short message, to a new conversation
// starting with msgs every `every` appends (created outside the timer), so
// no conversation reaches MaxMessages.
func appendEach(b *testing.B, s *Store, msgs []Message, every int) {
	owner, id := Owner("bench"), ""
	b.ResetTimer()
	for i := range b.N {
		if i%every == 0 {
			b.StopTimer()
			c, _, err := s.Create(ctx, owner, "b", "", msgs)
			if err != nil {
				b.Fatal(err)
			}
			id = c.ID
			b.StartTimer()
		}
		if _, err := s.Append(ctx, owner, id, "", Message{Role: "user", Content: "more"}); err != nil {
			b.Fatal(err)
		}
	}
}
