package service

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/verifier/reference"
	"github.com/tdforge/tdforge/verifier/verify"
)

// RevokedFile is the name of the revocation list in the reference
// directory: one entry a line, "NAME REASON", where NAME is a document's
// file name or its image "name@version"; '#' starts a comment. A list
// that cannot be read or parsed fails closed: every document is refused
// until it is fixed (a revocation just written must never be skipped).
const RevokedFile = "revoked"

// refDoc is one reference document of the directory.
type refDoc struct {
	id      string // file name: the ear.appraisal-policy-id
	doc     *refvalues.Document
	check   verify.Check // its signature check
	revoked string       // reason; "" when not revoked
}

// refSet is one load of the reference directory.
type refSet struct {
	docs     []*refDoc
	problems []string // files that could not be used, and why
	// revokedErr says why the revocation list is unusable ("" when it
	// is fine); every document is then refused.
	revokedErr  string
	fingerprint string
}

func (rs *refSet) counts() (active, revoked int) {
	for _, d := range rs.docs {
		if d.revoked != "" {
			revoked++
		} else {
			active++
		}
	}
	return
}

// isReferenceFile picks the files of the directory that hold reference
// documents: JSON documents and DSSE envelopes (builder sign writes
// NAME.json.dsse). Other exports (*.rvps.json and similar) are recognized
// and skipped by content, not by name.
func isReferenceFile(name string) bool {
	return !strings.HasPrefix(name, ".") && (strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".dsse"))
}

// dirFingerprint identifies the directory's content by file name, size and
// modification time (of the file a symlink names): a change reloads it.
func dirFingerprint(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range ents {
		if e.Name() != RevokedFile && !isReferenceFile(e.Name()) {
			continue
		}
		// Stat follows symlinks: in a Kubernetes Secret volume every file
		// is a symlink through "..data", which an update swaps.
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// loadRefs reads every reference document of dir. Signed documents are
// checked with keyPath; without a key (dev only) documents are trusted as
// read. A file that cannot be used is a problem, not an error: the others
// still serve. A revocation list that cannot be read or parsed revokes
// every document (fail closed).
func loadRefs(dir, keyPath string) (*refSet, error) {
	fp, err := dirFingerprint(dir)
	if err != nil {
		return nil, fmt.Errorf("reference directory: %w", err)
	}
	rs := &refSet{fingerprint: fp}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reference directory: %w", err)
	}
	// The key is read once and parsed at most once for all documents.
	var key *reference.Key
	var keyErr error
	if keyPath != "" {
		key, keyErr = reference.ReadKey(keyPath)
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !isReferenceFile(name) {
			continue
		}
		path := filepath.Join(dir, name)
		raw, err := os.ReadFile(path)
		if err != nil {
			rs.problems = append(rs.problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if !looksLikeReference(raw) {
			continue
		}
		var doc *refvalues.Document
		var chk verify.Check
		if err = keyErr; err == nil {
			doc, chk, err = reference.Decode(path, raw, key)
		}
		switch {
		case err != nil:
			rs.problems = append(rs.problems, fmt.Sprintf("%s: %v", name, err))
		case doc == nil || chk.Status == verify.Fail:
			rs.problems = append(rs.problems, fmt.Sprintf("%s: refused: %s", name, chk.Reason))
		default:
			rs.docs = append(rs.docs, &refDoc{id: name, doc: doc, check: chk})
		}
	}
	revoked, err := readRevoked(filepath.Join(dir, RevokedFile))
	if err != nil {
		rs.revokedErr = fmt.Sprintf("revocation list unusable, every document is refused until it is fixed: %v", err)
		rs.problems = append(rs.problems, rs.revokedErr)
		for _, d := range rs.docs {
			d.revoked = rs.revokedErr
		}
		sort.Strings(rs.problems)
		return rs, nil
	}
	for key, reason := range revoked {
		found := false
		for _, d := range rs.docs {
			if key == d.id || key == d.doc.Image.Name+"@"+d.doc.Image.Version {
				d.revoked, found = reason, true
			}
		}
		if !found {
			rs.problems = append(rs.problems, fmt.Sprintf("%s: %q names no reference document", RevokedFile, key))
		}
	}
	sort.Strings(rs.problems)
	return rs, nil
}

// looksLikeReference reports whether a JSON file's content b is a
// reference-values document or a DSSE envelope (not another export of the
// builder).
func looksLikeReference(b []byte) bool {
	return bytes.Contains(b, []byte(refvalues.Schema)) || bytes.Contains(b, []byte(`"payloadType"`))
}

// readRevoked parses the revocation list; a missing file revokes nothing.
// Errors name the file and the line.
func readRevoked(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	n := 1
	for ; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		reason = strings.TrimSpace(reason)
		if reason == "" {
			return nil, fmt.Errorf("%s line %d: %q gives no reason; write \"NAME REASON\"", path, n, name)
		}
		out[name] = reason
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s line %d: %v", path, n, err)
	}
	return out, nil
}
