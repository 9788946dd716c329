package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Model health: every model Ollama serves is probed with a one-token
// generation, which reads the weights. Weights that fail dm-verity (the host
// corrupted the payload disk) make the read fail with EIO, so the agent
// reports "not ready" with the reason instead of failing only at the first
// chat. Probes run in the background; results are cached.
const (
	modelOKTTL   = 2 * time.Minute
	modelFailTTL = 10 * time.Second
	modelTimeout = 5 * time.Minute
)

type modelHealth struct {
	mu      sync.Mutex
	checked time.Time
	err     error
	models  []string
	running bool
}

// status returns the last probe result, starting a probe when there is
// none or it is stale.
func (s *Server) modelStatus() ([]string, error) {
	h := &s.models
	h.mu.Lock()
	defer h.mu.Unlock()
	ttl := modelOKTTL
	if h.err != nil {
		ttl = modelFailTTL
	}
	stale := h.checked.IsZero() || time.Since(h.checked) > ttl
	if stale && !h.running {
		h.running = true
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), modelTimeout)
			defer cancel()
			models, err := s.probeModels(ctx)
			h.mu.Lock()
			h.models, h.err, h.checked, h.running = models, err, time.Now(), false
			h.mu.Unlock()
		}()
	}
	if h.checked.IsZero() {
		return nil, fmt.Errorf("models are being checked (a one-token generation per model)")
	}
	return h.models, h.err
}

// probeModels lists the models and generates one token from each.
func (s *Server) probeModels(ctx context.Context) ([]string, error) {
	c := &http.Client{Transport: s.transport}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.Upstream.JoinPath("/api/tags").String(), nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upstream Ollama unavailable: %w", err)
	}
	var tags struct {
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tags)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		return nil, fmt.Errorf("upstream Ollama /api/tags: %s %v", resp.Status, err)
	}
	var names []string
	for _, m := range tags.Models {
		body, _ := json.Marshal(map[string]any{"model": m.Name, "prompt": "ok", "stream": false,
			"options": map[string]any{"num_predict": 1, "temperature": 0}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Upstream.JoinPath("/api/generate").String(), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return names, fmt.Errorf("model %s: %w", m.Name, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct {
				Error string `json:"error"`
			}
			json.Unmarshal(b, &e)
			if e.Error == "" {
				e.Error = strings.TrimSpace(string(b))
			}
			return names, fmt.Errorf("model %s does not load: %s (%s)", m.Name, e.Error, resp.Status)
		}
		names = append(names, m.Name)
	}
	return names, nil
}
