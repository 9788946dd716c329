// Package convstore keeps the agent's conversations in SQLite (pure Go,
// modernc.org/sqlite) on the sealed state volume. Every write is one
// transaction in WAL mode with synchronous=FULL, so a write the caller saw
// succeed survives a crash of the process or the TD. Every committed write
// also increments a generation number, which the agent reports in its
// attestation evidence so that a client can notice the host replaying an
// older copy of the volume (see docs/threat-model.md).
//
// Every conversation has an owner: the hex SHA-256 of a secret its client
// holds (the agent's API takes it as a bearer token). Every read and write
// names the owner, and a conversation of another owner is ErrNotFound, so
// nobody learns that it exists. Conversations stored before owners existed
// have the empty owner, which no caller has: they are listed to nobody.
package convstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
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

// Store is an open conversation database.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

const schema = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', 0);
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY, title TEXT NOT NULL, model TEXT NOT NULL,
  created INTEGER NOT NULL, updated INTEGER NOT NULL, messages INTEGER NOT NULL DEFAULT 0,
  owner TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE TABLE IF NOT EXISTS messages (
  conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (conversation, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated);
`

// ownerMigration adds the owner column to a database made before owners
// existed; its conversations get the empty owner and are listed to nobody.
const ownerMigration = `ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT ''`

const ownerIndex = `CREATE INDEX IF NOT EXISTS conversations_owner ON conversations(owner, updated)`

// Open opens (creating if needed) the database in dir.
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
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("conversation store %s: %w", p, err)
	}
	if err := migrateOwner(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("conversation store %s: adding conversation owners: %w", p, err)
	}
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		db.Close()
		return nil, fmt.Errorf("conversation store %s: journal mode is %q, want wal (%v)", p, mode, err)
	}
	return &Store{db: db, now: time.Now}, nil
}

// migrateOwner adds the owner column and its index unless they exist.
func migrateOwner(db *sql.DB) error {
	var n int
	if err := db.QueryRow("SELECT count(*) FROM pragma_table_info('conversations') WHERE name = 'owner'").Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := db.Exec(ownerMigration); err != nil {
			return err
		}
	}
	_, err := db.Exec(ownerIndex)
	return err
}

// owned reports ErrNotFound unless conversation id exists and belongs to
// owner; the owner hashes are compared in constant time.
func owned(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id, owner string) error {
	var o string
	err := q.QueryRowContext(ctx, "SELECT owner FROM conversations WHERE id = ?", id).Scan(&o)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if o == "" || subtle.ConstantTimeCompare([]byte(o), []byte(owner)) != 1 {
		return ErrNotFound
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Generation is the number of committed writes.
func (s *Store) Generation(ctx context.Context) (uint64, error) {
	var g uint64
	err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'generation'").Scan(&g)
	return g, err
}

// write runs fn in a transaction that also increments the generation, and
// returns the new generation once committed.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) (uint64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return 0, err
	}
	var g uint64
	if err := tx.QueryRowContext(ctx, "UPDATE meta SET value = value + 1 WHERE key = 'generation' RETURNING value").Scan(&g); err != nil {
		return 0, err
	}
	return g, tx.Commit()
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
	sum := &Summary{ID: NewID(), Title: title, Model: model, Created: now, Updated: now, Messages: len(msgs)}
	g, err := s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM conversations WHERE owner = ?", owner).Scan(&n); err != nil {
			return err
		}
		if n >= MaxConversations {
			return fmt.Errorf("%w: you have %d conversations, the most this agent keeps per owner; delete some first", ErrFull, n)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO conversations(id, owner, title, model, created, updated, messages) VALUES (?, ?, ?, ?, ?, ?, ?)",
			sum.ID, owner, title, model, now, now, len(msgs)); err != nil {
			return err
		}
		for i, m := range msgs {
			if _, err := tx.ExecContext(ctx, "INSERT INTO messages(conversation, seq, role, content, created) VALUES (?, ?, ?, ?, ?)",
				sum.ID, i, m.Role, m.Content, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return sum, g, nil
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
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := owned(ctx, tx, id, owner); err != nil {
			return err
		}
		var n int
		var title string
		err := tx.QueryRowContext(ctx, "SELECT messages, title FROM conversations WHERE id = ?", id).Scan(&n, &title)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if n+len(msgs) > MaxMessages {
			return fmt.Errorf("%w: conversation %s holds %d messages, at most %d; start a new conversation", ErrFull, id, n, MaxMessages)
		}
		for i, m := range msgs {
			if _, err := tx.ExecContext(ctx, "INSERT INTO messages(conversation, seq, role, content, created) VALUES (?, ?, ?, ?, ?)",
				id, n+i, m.Role, m.Content, now); err != nil {
				return err
			}
			if title == "" && m.Role == "user" {
				title = Title(m.Content)
			}
		}
		_, err = tx.ExecContext(ctx, "UPDATE conversations SET messages = ?, updated = ?, title = ?, model = CASE WHEN ? = '' THEN model ELSE ? END WHERE id = ?",
			n+len(msgs), now, title, model, model, id)
		return err
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

// List returns owner's conversations, most recently updated first. The
// lookup by owner hash is not constant-time; it need not be, as the hash
// tells nothing of the secret it came from.
func (s *Store) List(ctx context.Context, owner string) ([]Summary, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT id, title, model, created, updated, messages FROM conversations WHERE owner = ? ORDER BY updated DESC, id", owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Summary{}
	for rows.Next() {
		var c Summary
		if err := rows.Scan(&c.ID, &c.Title, &c.Model, &c.Created, &c.Updated, &c.Messages); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Get returns conversation id of owner with its messages.
func (s *Store) Get(ctx context.Context, owner, id string) (*Conversation, error) {
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	if err := owned(ctx, s.db, id, owner); err != nil {
		return nil, err
	}
	c := &Conversation{Messages: []Message{}}
	err := s.db.QueryRowContext(ctx, "SELECT id, title, model, created, updated, messages FROM conversations WHERE id = ?", id).
		Scan(&c.ID, &c.Title, &c.Model, &c.Created, &c.Updated, &c.Summary.Messages)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT role, content, created FROM messages WHERE conversation = ? ORDER BY seq", id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var m Message
		if err := rows.Scan(&m.Role, &m.Content, &m.Created); err != nil {
			return nil, err
		}
		c.Messages = append(c.Messages, m)
	}
	return c, rows.Err()
}

// Delete removes conversation id of owner and its messages.
func (s *Store) Delete(ctx context.Context, owner, id string) (uint64, error) {
	if err := checkOwner(owner); err != nil {
		return 0, err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := owned(ctx, tx, id, owner); err != nil {
			return err
		}
		r, err := tx.ExecContext(ctx, "DELETE FROM conversations WHERE id = ?", id)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}
