// Package convstore keeps the agent's conversations in SQLite (pure Go,
// modernc.org/sqlite) on the sealed state volume. Every write is one
// transaction in WAL mode with synchronous=FULL, so a write the caller saw
// succeed survives a crash of the process or the TD. Every committed write
// also increments a generation number, which the agent reports in its
// attestation evidence so that a client can notice the host replaying an
// older copy of the volume (see docs/threat-model.md). A digest over every
// conversation, kept with the generation, binds the generation to the
// content: Open and every read refuse rows the host rolled back or changed
// (ErrTampered; seal.go).
//
// Every conversation has an owner: the hex SHA-256 of a secret its client
// holds (the agent's API takes it as a bearer token). Every read and write
// names the owner, and a conversation of another owner is ErrNotFound, so
// nobody learns that it exists.
package convstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the database file inside the volume's mount directory.
const FileName = "conversations.db"

// Bounds on what the store keeps.
const (
	MaxConversations = 1000      // per owner
	MaxMessages      = 1000      // per conversation
	MaxContent       = 256 << 10 // bytes per message
	MaxTitle         = 200       // bytes
	MaxModel         = 200       // bytes
	MaxRole          = 32        // bytes
)

// Errors the API maps to status codes.
var (
	ErrNotFound = errors.New("no such conversation")
	ErrFull     = errors.New("limit reached")
	ErrInvalid  = errors.New("invalid input")
)

var idRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

var ownerRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Owner returns the owner of the conversations a client with secret keeps:
// the hex SHA-256 of secret. The store keeps only this hash.
func Owner(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func checkOwner(owner string) error {
	if !ownerRE.MatchString(owner) {
		return fmt.Errorf("%w: owner must be 64 lowercase hex digits (convstore.Owner)", ErrInvalid)
	}
	return nil
}

// ValidID reports whether id has the form NewID makes: 32 lowercase hex digits.
func ValidID(id string) bool { return idRE.MatchString(id) }

// NewID returns a random conversation id.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	Created int64  `json:"created,omitempty"` // Unix milliseconds
}

// Summary describes a conversation without its messages.
type Summary struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	Model    string `json:"model"`
	Created  int64  `json:"created"` // Unix milliseconds
	Updated  int64  `json:"updated"`
	Messages int    `json:"messages"`
}

// Conversation is a conversation with its messages in order.
type Conversation struct {
	Summary
	Messages []Message `json:"messages"`
}

// Store is an open conversation database. Its methods may be called
// concurrently; they run one at a time.
type Store struct {
	db  *sql.DB
	now func() time.Time

	mu       sync.Mutex
	gen      uint64           // the generation this process last read or wrote
	convs    map[string]entry // every conversation's digests, by id
	ids      []string         // the keys of convs, sorted
	perOwner map[string]int   // how many conversations each owner has (set keeps it)
	failed   error            // the first tamper error seen: every call returns it
}

// schema is a new database's; meta holds the generation (an integer) and
// the store digest (a blob). Open runs it, with the first store digest, in
// one transaction, and only on a database that has no tables yet.
const schema = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
INSERT INTO meta(key, value) VALUES ('generation', 0);
CREATE TABLE conversations (
  id TEXT PRIMARY KEY, title TEXT NOT NULL, model TEXT NOT NULL,
  created INTEGER NOT NULL, updated INTEGER NOT NULL, messages INTEGER NOT NULL DEFAULT 0,
  owner TEXT NOT NULL, digest BLOB
) STRICT;
CREATE TABLE messages (
  conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (conversation, seq)
) STRICT;
CREATE INDEX conversations_updated ON conversations(updated);
CREATE INDEX conversations_owner ON conversations(owner, updated);
`

// Open opens (creating if needed) the database in dir, and checks every
// conversation and the generation against their digests: a database the
// host rolled back in part or changed is ErrTampered. A database is
// created only where the file holds no table at all (a fresh volume);
// one that has tables but no store digest (written before digests
// existed, or the host removed it) is refused, never sealed as found.
func Open(dir string) (*Store, error) {
	p := filepath.Join(dir, FileName)
	q := url.Values{}
	for _, pr := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(1)"} {
		q.Add("_pragma", pr)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+p+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("conversation store %s: %w", p, err)
	}
	// One connection: writes serialize in SQLite anyway, and a single
	// connection never sees SQLITE_BUSY from itself.
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		db.Close()
		return nil, fmt.Errorf("conversation store %s: journal mode is %q, want wal (%v)", p, mode, err)
	}
	s := &Store{db: db, now: time.Now, convs: map[string]entry{}, perOwner: map[string]int{}}
	if err := s.open(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("conversation store %s: %w", p, err)
	}
	return s, nil
}

// open creates the database if it has no table yet, else checks it
// against its digests (seal), in one transaction.
func (s *Store) open(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// "New" is decided from the schema before anything is created: an
	// empty file (a fresh volume) has none. Row counts would not do: the
	// host writes the rows.
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("creating the database: %w", err)
		}
		sum := s.storeDigest(0)
		if _, err := tx.ExecContext(ctx, "INSERT INTO meta(key, value) VALUES ('digest', ?)", sum[:]); err != nil {
			return fmt.Errorf("creating the database: %w", err)
		}
	} else if err := s.seal(ctx, tx); err != nil {
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Generation is the number of committed writes. It reads the database's
// and refuses one that differs from what this process last wrote.
func (s *Store) Generation(ctx context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return 0, s.failed
	}
	var g uint64
	if err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'generation'").Scan(&g); err != nil {
		return 0, err
	}
	if g != s.gen {
		return 0, s.fail(tampered("the generation in the database is %d, the agent last wrote %d", g, s.gen))
	}
	return g, nil
}

// write runs fn in a transaction that also increments the generation and
// updates the store digest, and returns the new generation once
// committed. fn changes conversation id, whose new digests are e (nil:
// deleted).
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) (id string, e *entry, err error)) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return 0, s.failed
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	id, e, err := fn(tx)
	if err != nil {
		return 0, s.fail(err)
	}
	var g uint64
	if err := tx.QueryRowContext(ctx, "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value").Scan(&g); err != nil {
		return 0, err
	}
	if g != s.gen+1 {
		return 0, s.fail(tampered("the generation in the database is %d, the agent last wrote %d", g-1, s.gen))
	}
	old, had := s.convs[id]
	s.set(id, e)
	sum := s.storeDigest(g)
	_, err = tx.ExecContext(ctx, "UPDATE meta SET value = ? WHERE key = 'digest'", sum[:])
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		if had {
			s.set(id, &old)
		} else {
			s.set(id, nil)
		}
		return 0, err
	}
	s.gen = g
	return g, nil
}

func checkMessage(m Message) error {
	switch {
	case m.Role == "" || len(m.Role) > MaxRole:
		return fmt.Errorf("%w: message role must be 1..%d bytes, such as \"user\" or \"assistant\"", ErrInvalid, MaxRole)
	case len(m.Content) > MaxContent:
		return fmt.Errorf("%w: message content is %d bytes; the limit is %d", ErrInvalid, len(m.Content), MaxContent)
	}
	return nil
}

// Create stores a new conversation of owner and returns it with its id.
func (s *Store) Create(ctx context.Context, owner, title, model string, msgs []Message) (*Summary, uint64, error) {
	if err := checkOwner(owner); err != nil {
		return nil, 0, err
	}
	if len(title) > MaxTitle || len(model) > MaxModel {
		return nil, 0, fmt.Errorf("%w: title and model are limited to %d bytes", ErrInvalid, MaxTitle)
	}
	if len(msgs) > MaxMessages {
		return nil, 0, fmt.Errorf("%w: %d messages; a conversation holds at most %d", ErrFull, len(msgs), MaxMessages)
	}
	for _, m := range msgs {
		if err := checkMessage(m); err != nil {
			return nil, 0, err
		}
	}
	now := s.now().UnixMilli()
	r := row{Summary{ID: NewID(), Title: title, Model: model, Created: now, Updated: now, Messages: len(msgs)}, owner}
	msgs = append([]Message(nil), msgs...) // their creation times are set below
	g, err := s.write(ctx, func(tx *sql.Tx) (string, *entry, error) {
		if n := s.perOwner[owner]; n >= MaxConversations {
			return "", nil, fmt.Errorf("%w: you have %d conversations, the most this agent keeps per owner; delete some first", ErrFull, n)
		}
		var h [32]byte
		for i := range msgs {
			msgs[i].Created = now
			h = chain(h, int64(i), msgs[i])
		}
		e := newEntry(r, h)
		if _, err := tx.ExecContext(ctx, "INSERT INTO conversations(id, owner, title, model, created, updated, messages, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			r.ID, owner, title, model, now, now, len(msgs), e.conv[:]); err != nil {
			return "", nil, err
		}
		for i, m := range msgs {
			if err := insertMessage(ctx, tx, r.ID, i, m); err != nil {
				return "", nil, err
			}
		}
		return r.ID, &e, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return &r.Summary, g, nil
}

func insertMessage(ctx context.Context, tx *sql.Tx, id string, seq int, m Message) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO messages(conversation, seq, role, content, created) VALUES (?, ?, ?, ?, ?)",
		id, seq, m.Role, m.Content, m.Created)
	return err
}

// Append adds messages to conversation id of owner; a conversation without a title
// takes the first 60 characters of the first user message, and model, when
// not empty, replaces the conversation's model.
func (s *Store) Append(ctx context.Context, owner, id, model string, msgs ...Message) (uint64, error) {
	if err := checkOwner(owner); err != nil {
		return 0, err
	}
	if len(model) > MaxModel {
		return 0, fmt.Errorf("%w: model is limited to %d bytes", ErrInvalid, MaxModel)
	}
	for _, m := range msgs {
		if err := checkMessage(m); err != nil {
			return 0, err
		}
	}
	now := s.now().UnixMilli()
	return s.write(ctx, func(tx *sql.Tx) (string, *entry, error) {
		// The new digest extends the running hash the Store keeps, so
		// Append reads only the row (checked against its digest) and
		// counts the messages in the index; Get and the next Open check
		// their content.
		r, err := s.readRow(ctx, tx, owner, id)
		if err != nil {
			return "", nil, err
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE conversation = ?", id).Scan(&n); err != nil {
			return "", nil, err
		}
		if n != r.Messages {
			return "", nil, tampered("a conversation's messages do not match its digest (the database holds %d, its row says %d)", n, r.Messages)
		}
		if n+len(msgs) > MaxMessages {
			// No id in the text: callers log it to the console.
			return "", nil, fmt.Errorf("%w: the conversation holds %d messages, at most %d; start a new conversation", ErrFull, n, MaxMessages)
		}
		h := s.convs[id].msgs
		for i, m := range msgs {
			m.Created = now
			if err := insertMessage(ctx, tx, id, n+i, m); err != nil {
				return "", nil, err
			}
			if r.Title == "" && m.Role == "user" {
				r.Title = Title(m.Content)
			}
			h = chain(h, int64(n+i), m)
		}
		if model != "" {
			r.Model = model
		}
		r.Updated, r.Messages = now, n+len(msgs)
		e := newEntry(r, h)
		if _, err := tx.ExecContext(ctx, "UPDATE conversations SET messages = ?, updated = ?, title = ?, model = ?, digest = ? WHERE id = ?",
			r.Messages, now, r.Title, r.Model, e.conv[:], id); err != nil {
			return "", nil, err
		}
		return id, &e, nil
	})
}

// Title derives a title from a message: its first line, at most 60 runes.
func Title(content string) string {
	t := strings.TrimSpace(content)
	if i := strings.IndexByte(t, '\n'); i >= 0 {
		t = t[:i]
	}
	if r := []rune(t); len(r) > 60 {
		t = string(r[:60]) + "…"
	}
	return t
}

// List returns owner's conversations, most recently updated first. Each
// row is checked against its remembered digest, and the ids against the
// conversations of owner this process knows. The lookup by owner hash is
// not constant-time; it need not be, as the hash tells nothing of the
// secret it came from.
func (s *Store) List(ctx context.Context, owner string) ([]Summary, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return nil, s.failed
	}
	out, err := s.list(ctx, owner)
	return out, s.fail(err)
}

func (s *Store) list(ctx context.Context, owner string) ([]Summary, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+rowColumns+" FROM conversations WHERE owner = ? ORDER BY updated DESC, id", owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Summary{}
	for rows.Next() {
		r, err := scanRow(rows)
		if err != nil {
			return nil, err
		}
		e, ok := s.convs[r.ID]
		if !ok {
			return nil, tampered("the database holds a conversation the agent does not keep (a deleted conversation brought back)")
		}
		if r.rowDigest() != e.row {
			return nil, tampered("a conversation's row does not match its digest")
		}
		out = append(out, r.Summary)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n := s.perOwner[owner]; n != len(out) {
		return nil, tampered("the database lists %d of the owner's conversations, the agent keeps %d", len(out), n)
	}
	return out, nil
}

// Get returns conversation id of owner with its messages, checked against
// the remembered digest.
func (s *Store) Get(ctx context.Context, owner, id string) (*Conversation, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return nil, s.failed
	}
	c, err := s.load(ctx, s.db, owner, id)
	return c, s.fail(err)
}

// Check returns nil if owner has conversation id, else ErrNotFound (or
// the error of a row that does not match its digest). It reads only the
// row, not the messages.
func (s *Store) Check(ctx context.Context, owner, id string) error {
	if err := checkOwner(owner); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	_, err := s.readRow(ctx, s.db, owner, id)
	return s.fail(err)
}

// Delete removes conversation id of owner and its messages.
func (s *Store) Delete(ctx context.Context, owner, id string) (uint64, error) {
	if err := checkOwner(owner); err != nil {
		return 0, err
	}
	return s.write(ctx, func(tx *sql.Tx) (string, *entry, error) {
		if _, err := s.readRow(ctx, tx, owner, id); err != nil {
			return "", nil, err
		}
		r, err := tx.ExecContext(ctx, "DELETE FROM conversations WHERE id = ?", id)
		if err != nil {
			return "", nil, err
		}
		if n, _ := r.RowsAffected(); n != 1 {
			return "", nil, tampered("a conversation the agent keeps is missing from the database")
		}
		return id, nil, nil
	})
}
