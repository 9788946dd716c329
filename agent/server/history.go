package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tdforge/tdforge/internal/canonjson"

	"github.com/tdforge/tdforge/agent/convstore"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
)

// History says where the agent keeps conversations: the sealed volume
// whose users include the agent (policy.Policy.AgentVolume).
type History struct {
	// Volume is the volume's name; "" means the image has none, and the
	// conversation API answers 503 saying so.
	Volume string
	// Dir is the volume's mount directory (policy.Volume.Mount).
	Dir string
	// StatusDir holds initd's status files (volstatus.Dir).
	StatusDir string
	// RequireMount refuses Dir unless a filesystem is mounted there, so
	// conversations never land on the initramfs (the agent sets it; tests
	// use plain directories).
	RequireMount bool
}

// ConversationHeader is the request header with which a client asks the
// agent to save a /api/chat exchange in a conversation.
const ConversationHeader = "X-Tdforge-Conversation"

// HistoryHeader is set to "unavailable" on a /api/chat response whose
// exchange could not be saved because the volume is not open.
const HistoryHeader = "X-Tdforge-History"

// maxCreateBody bounds a POST /v1/conversations body.
const maxCreateBody = 8 << 20

// historyError is why the conversation store is not available.
type historyError struct{ msg string }

func (e *historyError) Error() string { return e.msg }

// store returns the open conversation store, opening it on first use once
// initd reports the volume mounted.
func (s *Server) store() (*convstore.Store, error) {
	h := s.cfg.History
	if h.Volume == "" {
		return nil, &historyError{"conversation history is off: this image has no volume for the agent (add a manifest volume block with users = [\"agent\"])"}
	}
	s.historyMu.Lock()
	defer s.historyMu.Unlock()
	if s.conv != nil {
		return s.conv, nil
	}
	if s.convTampered != nil {
		return nil, s.convTampered
	}
	st := volstatus.Read(h.StatusDir, h.Volume)
	if st.State != volstatus.Mounted {
		return nil, &historyError{fmt.Sprintf("conversation history is unavailable: volume %q is %s", h.Volume, st)}
	}
	if h.RequireMount {
		if err := checkMountPoint(h.Dir); err != nil {
			return nil, &historyError{fmt.Sprintf("conversation history is unavailable: volume %q: %v", h.Volume, err)}
		}
	}
	c, err := convstore.Open(h.Dir)
	if err != nil {
		he := &historyError{fmt.Sprintf("conversation history is unavailable: volume %q is mounted but %v", h.Volume, err)}
		if errors.Is(err, convstore.ErrTampered) {
			// Never retried: the store stays failed until the agent
			// restarts, and is never repaired.
			s.cfg.Log.Printf("%s", he.msg)
			s.convTampered = he
		}
		return nil, he
	}
	s.conv = c
	return c, nil
}

// checkMountPoint reports an error unless dir is the root of a mounted
// filesystem (its device differs from its parent's).
func checkMountPoint(dir string) error {
	var a, b syscall.Stat_t
	if err := syscall.Stat(dir, &a); err != nil {
		return err
	}
	if err := syscall.Stat(filepath.Dir(dir), &b); err != nil {
		return err
	}
	if a.Dev == b.Dev {
		return fmt.Errorf("nothing is mounted at %s although initd reports it mounted", dir)
	}
	return nil
}

// historyState is the volume's state for /readyz and the attestation
// evidence: "mounted" or "locked (reason)"; the generation is set when
// the store is open.
func (s *Server) historyState(ctx context.Context) (string, *uint64) {
	if s.cfg.History.Volume == "" {
		return "", nil
	}
	c, err := s.store()
	if err != nil {
		st := volstatus.Read(s.cfg.History.StatusDir, s.cfg.History.Volume)
		if st.State == volstatus.Mounted {
			return fmt.Sprintf("failed (%v)", err), nil
		}
		return st.String(), nil
	}
	g, err := c.Generation(ctx)
	if err != nil {
		return fmt.Sprintf("failed (conversation store: %v)", err), nil
	}
	return string(volstatus.Mounted), &g
}

func (s *Server) closeStore() error {
	s.historyMu.Lock()
	defer s.historyMu.Unlock()
	if s.conv == nil {
		return nil
	}
	err := s.conv.Close()
	s.conv = nil
	return err
}

// storeError answers a store error: its status code and message. Messages
// never contain conversation text (the store's errors do not).
func (s *Server) storeError(w http.ResponseWriter, err error) {
	var he *historyError
	switch {
	case errors.As(err, &he):
		writeError(w, http.StatusServiceUnavailable, he.msg)
	case errors.Is(err, convstore.ErrNotFound):
		writeError(w, http.StatusNotFound, "no such conversation: list them with GET /v1/conversations")
	case errors.Is(err, convstore.ErrFull):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, convstore.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, convstore.ErrTampered):
		// The store refuses every later call too; /readyz and the
		// evidence report it failed.
		s.cfg.Log.Printf("%v", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		s.cfg.Log.Printf("conversation store: %v", err)
		writeError(w, http.StatusInternalServerError, "conversation store failed; see the agent's log")
	}
}

// createRequest is the body of POST /v1/conversations (all optional).
type createRequest struct {
	Title    string              `json:"title"`
	Model    string              `json:"model"`
	Messages []convstore.Message `json:"messages"`
}

type listResponse struct {
	Conversations []convstore.Summary `json:"conversations"`
	Generation    uint64              `json:"generation"`
}

type summaryResponse struct {
	convstore.Summary
	Generation uint64 `json:"generation"`
}

type conversationResponse struct {
	*convstore.Conversation
	Generation uint64 `json:"generation"`
}

// crossOrigin refuses (403) a request a browser sent from another origin:
// a page elsewhere may send a "simple" POST without a preflight, and must
// not create or change conversations. It returns true when it answered.
func crossOrigin(w http.ResponseWriter, r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || sameOrigin(o, r) {
		return false
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("the conversation API refuses requests from other origins (Origin %.100q); use the agent's own web UI", o))
	return true
}

// apiOwner admits a conversation API request: it refuses other origins
// (crossOrigin), then returns the owner of the request's bearer secret
// (owner). It returns false after answering.
func apiOwner(w http.ResponseWriter, r *http.Request) (string, bool) {
	if crossOrigin(w, r) {
		return "", false
	}
	return owner(w, r)
}

// handleConversations serves GET (list) and POST (create) /v1/conversations.
func (s *Server) handleConversations(w http.ResponseWriter, r *http.Request) {
	who, ok := apiOwner(w, r)
	if !ok {
		return
	}
	if r.Method == http.MethodPost {
		body, ok := readBody(w, r, maxCreateBody, s.cfg.BodyTimeout)
		if !ok {
			return
		}
		var req createRequest
		if len(bytes.TrimSpace(body)) > 0 {
			if err := decodeStrict(body, &req); err != nil {
				writeError(w, http.StatusBadRequest, "conversation: "+err.Error()+`; send {"title": "...", "model": "...", "messages": [{"role": "user", "content": "..."}]}, every field optional`)
				return
			}
		}
		c, err := s.store()
		if err != nil {
			s.storeError(w, err)
			return
		}
		sum, g, err := c.Create(r.Context(), who, req.Title, req.Model, req.Messages)
		if err != nil {
			s.storeError(w, err)
			return
		}
		w.Header().Set("Location", "/v1/conversations/"+sum.ID)
		writeJSON(w, http.StatusCreated, summaryResponse{*sum, g})
		return
	}
	c, err := s.store()
	if err != nil {
		s.storeError(w, err)
		return
	}
	list, err := c.List(r.Context(), who)
	s.answerRead(w, r, c, err, func(g uint64) any { return listResponse{list, g} })
}

// answerRead answers a read of c that returned err: the store's error, or
// 200 with body(g), g the store's generation read after it.
func (s *Server) answerRead(w http.ResponseWriter, r *http.Request, c *convstore.Store, err error, body func(g uint64) any) {
	if err != nil {
		s.storeError(w, err)
		return
	}
	g, err := c.Generation(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, body(g))
}

// handleConversation serves GET and DELETE /v1/conversations/{id}.
func (s *Server) handleConversation(w http.ResponseWriter, r *http.Request) {
	who, ok := apiOwner(w, r)
	if !ok {
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/v1/conversations/")
	if !convstore.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("conversation id %.80q is not valid: ids are 32 lowercase hex digits, as POST /v1/conversations returns them", id))
		return
	}
	c, err := s.store()
	if err != nil {
		s.storeError(w, err)
		return
	}
	if r.Method == http.MethodDelete {
		g, err := c.Delete(r.Context(), who, id)
		if err != nil {
			s.storeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"deleted": id, "generation": g})
		return
	}
	conv, err := c.Get(r.Context(), who, id)
	s.answerRead(w, r, c, err, func(g uint64) any { return conversationResponse{conv, g} })
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data.
func decodeStrict(b []byte, v any) error {
	if err := canonjson.Decode(bytes.NewReader(b), v); err != nil {
		return fmt.Errorf("body is not valid JSON: %v", err)
	}
	return nil
}

// chatRequest is what the agent reads of a /api/chat body to save it.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

// beginSave prepares saving a /api/chat exchange into the conversation the
// client names in ConversationHeader: it stores the request's last user
// message and returns the writer that captures the answer, or nil when
// nothing is to be saved. It returns false after answering the client
// with an error. A chat that names a conversation must carry the bearer
// secret of the conversation's owner (401 without one, 404 for another
// owner's conversation); a chat that names none is answered unsaved.
func (s *Server) beginSave(w http.ResponseWriter, r *http.Request, body []byte) (*chatCapture, bool) {
	id := r.Header.Get(ConversationHeader)
	if id == "" || r.URL.Path != "/api/chat" {
		return nil, true
	}
	who, ok := owner(w, r)
	if !ok {
		return nil, false
	}
	if !convstore.ValidID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s %.80q is not a conversation id: ids are 32 lowercase hex digits, as POST /v1/conversations returns them", ConversationHeader, id))
		return nil, false
	}
	c, err := s.store()
	if err != nil {
		// Chat works without history: the answer is not saved, and the
		// header says so (GET /v1/conversations gives the reason).
		w.Header().Set(HistoryHeader, "unavailable")
		return nil, true
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return nil, false
	}
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == "user" {
		m := req.Messages[n-1]
		if _, err := c.Append(r.Context(), who, id, req.Model, convstore.Message{Role: m.Role, Content: m.Content}); err != nil {
			s.storeError(w, err)
			return nil, false
		}
	} else if err := c.Check(r.Context(), who, id); err != nil {
		s.storeError(w, err)
		return nil, false
	}
	return &chatCapture{ResponseWriter: w, owner: who, id: id, model: req.Model, store: c}, true
}

// maxChatLine bounds one line of Ollama's streamed answer.
const maxChatLine = 1 << 20

// chatCapture passes Ollama's /api/chat answer through to the client and
// collects the assistant's text from it (streamed NDJSON or one object).
type chatCapture struct {
	http.ResponseWriter
	owner, id, model string
	store            *convstore.Store
	status           int
	line             []byte
	content          strings.Builder
	done             bool // a line with "done": true arrived
	broken           bool // an unparsable or oversized answer: nothing is saved
}

func (c *chatCapture) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *chatCapture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if !c.broken {
		c.feed(b)
	}
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (the proxy's flushes) reach w.
func (c *chatCapture) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Flush flushes the client connection.
func (c *chatCapture) Flush() { _ = http.NewResponseController(c.ResponseWriter).Flush() }

func (c *chatCapture) feed(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			c.line = append(c.line, b...)
			if len(c.line) > maxChatLine {
				c.broken = true
			}
			return
		}
		c.line = append(c.line, b[:i]...)
		c.parseLine()
		c.line = c.line[:0]
		b = b[i+1:]
	}
}

func (c *chatCapture) parseLine() {
	if len(bytes.TrimSpace(c.line)) == 0 || c.broken {
		return
	}
	var v struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		Done  bool   `json:"done"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(c.line, &v); err != nil || v.Error != "" {
		c.broken = true
		return
	}
	c.content.WriteString(v.Message.Content)
	if c.content.Len() > convstore.MaxContent {
		c.broken = true
	}
	c.done = c.done || v.Done
}

// finish saves the collected answer when Ollama completed it.
func (c *chatCapture) finish(ctx context.Context, logf func(string, ...any)) {
	if !c.broken && len(c.line) > 0 {
		c.parseLine()
	}
	if c.status != http.StatusOK || c.broken || !c.done || c.Header().Get("Content-Encoding") != "" {
		return
	}
	// The client's context may be gone (it disconnected after the last
	// line); the answer is complete, so it is saved regardless.
	if _, err := c.store.Append(context.WithoutCancel(ctx), c.owner, c.id, c.model, convstore.Message{Role: "assistant", Content: c.content.String()}); err != nil {
		logf("conversation store: saving an answer: %s", errorClass(err))
	}
}

// errorClass is what the console may show of a store error: the class of
// the store's own errors (their text may name limits the client set), the
// tamper error (which names no conversation), or SQLite's error text.
func errorClass(err error) string {
	switch {
	case errors.Is(err, convstore.ErrFull):
		return convstore.ErrFull.Error() + " (the conversation is full; the answer was not saved)"
	case errors.Is(err, convstore.ErrNotFound):
		return convstore.ErrNotFound.Error() + " (deleted while the answer streamed)"
	case errors.Is(err, convstore.ErrInvalid):
		return convstore.ErrInvalid.Error()
	}
	return err.Error()
}
