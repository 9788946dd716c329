package convstore

// The seal binds the generation to the content, so that the host, which
// can put back older copies of single disk blocks (dm-integrity does not
// bind a block to a version), cannot roll back part of the database
// unnoticed:
//
//   - every conversation row keeps a digest over the row and its messages
//     (convDigest), written in the transaction that changes either; the
//     messages enter it as a running hash chained over them in order
//     (chain), so an append extends it without reading the messages;
//   - the meta table keeps, beside the generation and in the same
//     transaction, a digest over the generation and every (id, conversation
//     digest) in id order (storeDigest);
//   - Open recomputes both from the rows and refuses a database where
//     either differs (ErrTampered);
//   - after Open the Store keeps every conversation's digests and the
//     generation in memory (TD memory is trusted) and checks every row it
//     reads against them, so pages the host rolls back while the agent runs
//     are refused too.
//
// Every field is length-prefixed (8 bytes, big-endian) and every digest
// starts with its own domain string, so no two different contents encode
// alike.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
)

// ErrTampered is the error (errors.Is) of a store whose rows do not match
// their digests: the host rolled back or changed pages of the volume.
var ErrTampered = errors.New("conversation store tampered with")

// TamperError says what did not match. Its text names no conversation
// (the agent logs it to the console, which the host reads).
type TamperError struct{ What string }

func (e *TamperError) Error() string {
	return "conversation store tampered with: " + e.What + " (pages of the volume were rolled back or changed by the host; the agent serves no history from this store and never repairs it: boot the TD with the volume's latest state, or reformat the volume, losing its conversations)"
}

// Is makes errors.Is(err, ErrTampered) true.
func (e *TamperError) Is(target error) bool { return target == ErrTampered }

func tampered(format string, args ...any) error {
	return &TamperError{What: fmt.Sprintf(format, args...)}
}

const (
	rowDomain   = "tdforge convstore row v1"
	msgDomain   = "tdforge convstore message v1"
	convDomain  = "tdforge convstore conversation v2"
	storeDomain = "tdforge convstore store v1"
)

// digest hashes length-prefixed fields after a domain string.
type digest struct{ h hash.Hash }

func newDigest(domain string) digest {
	d := digest{sha256.New()}
	d.str(domain)
	return d
}

func (d digest) str(s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	d.h.Write(n[:])
	io.WriteString(d.h, s)
}

func (d digest) sum32(s [32]byte) {
	var b [40]byte
	binary.BigEndian.PutUint64(b[:8], 32)
	copy(b[8:], s[:])
	d.h.Write(b[:])
}

func (d digest) int(v int64) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], 8)
	binary.BigEndian.PutUint64(b[8:], uint64(v))
	d.h.Write(b[:])
}

func (d digest) sum() (s [32]byte) {
	d.h.Sum(s[:0])
	return s
}

// row is a conversation's row.
type row struct {
	Summary
	Owner string
}

const rowColumns = "id, owner, title, model, created, updated, messages"

func scanRow(sc interface{ Scan(...any) error }, extra ...any) (row, error) {
	var r row
	err := sc.Scan(append([]any{&r.ID, &r.Owner, &r.Title, &r.Model, &r.Created, &r.Updated, &r.Messages}, extra...)...)
	return r, err
}

func (r row) fields(d digest) {
	d.str(r.ID)
	d.str(r.Owner)
	d.str(r.Title)
	d.str(r.Model)
	d.int(r.Created)
	d.int(r.Updated)
	d.int(int64(r.Messages))
}

// rowDigest covers the row alone (List checks it).
func (r row) rowDigest() [32]byte {
	d := newDigest(rowDomain)
	r.fields(d)
	return d.sum()
}

// chain extends the running hash of a conversation's messages, prev
// (zero before the first), by message m at seq: H(domain, prev, seq, role,
// content, creation time).
func chain(prev [32]byte, seq int64, m Message) [32]byte {
	d := newDigest(msgDomain)
	d.sum32(prev)
	d.int(seq)
	d.str(m.Role)
	d.str(m.Content)
	d.int(m.Created)
	return d.sum()
}

// convDigest is a conversation's digest: its row, then the running hash
// of its messages.
func convDigest(r row, msgs [32]byte) [32]byte {
	d := newDigest(convDomain)
	r.fields(d)
	d.sum32(msgs)
	return d.sum()
}

// entry is what the Store remembers of a conversation.
type entry struct {
	owner string
	row   [32]byte // rowDigest
	msgs  [32]byte // the running hash of its messages (chain)
	conv  [32]byte // conversation digest (the row's digest column)
}

func newEntry(r row, msgs [32]byte) entry {
	return entry{owner: r.Owner, row: r.rowDigest(), msgs: msgs, conv: convDigest(r, msgs)}
}

// set records e as conversation id's entry (nil: id is gone), keeping ids
// sorted and the count of each owner's conversations.
func (s *Store) set(id string, e *entry) {
	i := sort.SearchStrings(s.ids, id)
	old, had := s.convs[id]
	if had {
		if s.perOwner[old.owner]--; s.perOwner[old.owner] == 0 {
			delete(s.perOwner, old.owner)
		}
	}
	if e != nil {
		s.perOwner[e.owner]++
	}
	switch {
	case e == nil && had:
		delete(s.convs, id)
		s.ids = append(s.ids[:i], s.ids[i+1:]...)
	case e != nil && !had:
		s.ids = append(s.ids, "")
		copy(s.ids[i+1:], s.ids[i:])
		s.ids[i] = id
		fallthrough
	case e != nil:
		s.convs[id] = *e
	}
}

// storeDigest covers generation g and every remembered conversation.
func (s *Store) storeDigest(g uint64) [32]byte {
	d := newDigest(storeDomain)
	d.int(int64(g))
	d.int(int64(len(s.ids)))
	for _, id := range s.ids {
		e := s.convs[id]
		d.str(id)
		d.sum32(e.conv)
	}
	return d.sum()
}

// fail remembers the first tamper error: every later call returns it.
func (s *Store) fail(err error) error {
	if s.failed == nil && errors.Is(err, ErrTampered) {
		s.failed = err
	}
	return err
}

type querier interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// readRow reads conversation id's row, checks it against the remembered
// digest and returns it if owner owns it (else ErrNotFound).
func (s *Store) readRow(ctx context.Context, q querier, owner, id string) (row, error) {
	r, err := scanRow(q.QueryRowContext(ctx, "SELECT "+rowColumns+" FROM conversations WHERE id = ?", id))
	e, known := s.convs[id]
	switch {
	case errors.Is(err, sql.ErrNoRows) && known:
		return r, tampered("a conversation the agent keeps is missing from the database")
	case errors.Is(err, sql.ErrNoRows):
		return r, ErrNotFound
	case err != nil:
		return r, err
	case !known:
		return r, tampered("the database holds a conversation the agent does not keep (a deleted conversation brought back)")
	case r.rowDigest() != e.row:
		return r, tampered("a conversation's row does not match its digest")
	case r.Owner == "" || subtle.ConstantTimeCompare([]byte(r.Owner), []byte(owner)) != 1:
		return r, ErrNotFound
	}
	return r, nil
}

// load reads conversation id of owner with its messages and checks them
// against the remembered digest.
func (s *Store) load(ctx context.Context, q querier, owner, id string) (*Conversation, error) {
	r, err := s.readRow(ctx, q, owner, id)
	if err != nil {
		return nil, err
	}
	c := &Conversation{Summary: r.Summary, Messages: []Message{}}
	var h [32]byte
	rows, err := q.QueryContext(ctx, "SELECT seq, role, content, created FROM messages WHERE conversation = ? ORDER BY seq", id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var m Message
		if err := rows.Scan(&seq, &m.Role, &m.Content, &m.Created); err != nil {
			return nil, err
		}
		h = chain(h, seq, m)
		c.Messages = append(c.Messages, m)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if convDigest(r, h) != s.convs[id].conv {
		return nil, tampered("a conversation's messages do not match its digest")
	}
	return c, nil
}

// seal checks an existing database against its digests and loads them
// into s. It runs in Open's transaction. A database without the digest
// column or the store digest is refused: no database is sealed as found,
// since the host may have written it.
func (s *Store) seal(ctx context.Context, tx *sql.Tx) error {
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM pragma_table_info('conversations') WHERE name = 'digest'").Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return tampered("the conversations table has lost its digest column" + preSeal)
	}
	var stored []byte
	switch err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'digest'").Scan(&stored); {
	case errors.Is(err, sql.ErrNoRows):
		return tampered("the database has no store digest" + preSeal)
	case err != nil:
		return fmt.Errorf("reading the store digest: %w", err)
	}
	if err := tx.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = 'generation'").Scan(&s.gen); err != nil {
		return tampered("the database has no readable generation (%v)", err)
	}
	var convs []row
	var digests [][]byte
	rows, err := tx.QueryContext(ctx, "SELECT "+rowColumns+", digest FROM conversations ORDER BY id")
	if err != nil {
		return err
	}
	for rows.Next() {
		var d []byte
		r, err := scanRow(rows, &d)
		if err != nil {
			rows.Close()
			return err
		}
		convs = append(convs, r)
		digests = append(digests, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	hashes, err := messageHashes(ctx, tx, convs)
	if err != nil {
		return err
	}
	for i, r := range convs {
		e := newEntry(r, hashes[i])
		if subtle.ConstantTimeCompare(digests[i], e.conv[:]) != 1 {
			return tampered("a conversation's row or messages do not match its digest")
		}
		s.set(r.ID, &e)
	}
	sum := s.storeDigest(s.gen)
	if subtle.ConstantTimeCompare(stored, sum[:]) != 1 {
		return tampered("the store digest does not match the rows: a partial rollback or a change by the host")
	}
	return nil
}

// preSeal says what to do with a database written before the seal (or
// made to look like one by the host).
const preSeal = "; a database written by an agent from before the seal is refused as well, as the host can make one: reformat the volume (docs/volume.md, \"Reformatting\")"

// messageHashes computes the running hash of the messages of each of
// convs (sorted by id) from one pass over the messages table.
func messageHashes(ctx context.Context, tx *sql.Tx, convs []row) ([][32]byte, error) {
	hashes := make([][32]byte, len(convs))
	rows, err := tx.QueryContext(ctx, "SELECT conversation, seq, role, content, created FROM messages ORDER BY conversation, seq")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var id string
		var seq int64
		var m Message
		if err := rows.Scan(&id, &seq, &m.Role, &m.Content, &m.Created); err != nil {
			return nil, err
		}
		for i < len(convs) && convs[i].ID < id {
			i++
		}
		if i == len(convs) || convs[i].ID != id {
			return nil, tampered("the database holds messages of a conversation that does not exist")
		}
		hashes[i] = chain(hashes[i], seq, m)
	}
	return hashes, rows.Err()
}
