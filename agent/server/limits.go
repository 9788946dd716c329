package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// Option limits (policy.Limits, from the manifest's agent block) on the
// generation endpoints. The rule, per option:
//
//   - a value above the limit, or one meaning "unbounded" (a negative
//     num_predict or keep_alive), is refused with 400 naming the limit:
//     the agent never silently changes what a client asked for;
//   - an absent num_predict (max_tokens on the OpenAI endpoints) or
//     keep_alive is set to the limit, since Ollama's default for it is
//     unbounded or may exceed the limit;
//   - an absent num_ctx is left to the model's measured parameters.
//
// Ollama decodes top-level fields case-insensitively and merges repeated
// "options" objects, so a body that repeats a key (in any letter case) is
// refused rather than guessed at.

// limitPaths says which request bodies carry which options.
var limitPaths = map[string]struct{ native, fillPredict bool }{
	"/api/chat":            {native: true, fillPredict: true},
	"/api/generate":        {native: true, fillPredict: true},
	"/api/embed":           {native: true},
	"/api/embeddings":      {native: true},
	"/v1/chat/completions": {fillPredict: true},
	"/v1/completions":      {fillPredict: true},
}

// member is one key/value pair of a JSON object, in body order.
type member struct {
	key string
	val json.RawMessage
}

// decodeObject reads a JSON object's members in order, refusing keys that
// repeat under case folding.
func decodeObject(b []byte, what string) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("%s is not a JSON object", what)
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", what, err)
		}
		k := t.(string)
		if seen[strings.ToLower(k)] {
			return nil, fmt.Errorf("%s has key %q more than once; send each key once", what, k)
		}
		seen[strings.ToLower(k)] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %v", what, err)
		}
		out = append(out, member{k, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%s has trailing data after the object", what)
	}
	return out, nil
}

func encodeObject(ms []member) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.val)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// find returns the index of key (case-insensitive), or -1; a JSON null
// counts as absent.
func find(ms []member, key string) int {
	for i, m := range ms {
		if strings.EqualFold(m.key, key) && string(bytes.TrimSpace(m.val)) != "null" {
			return i
		}
	}
	return -1
}

// set gives key the value v, replacing a null member of that name.
func set(ms []member, key string, v []byte) []member {
	for i, m := range ms {
		if strings.EqualFold(m.key, key) {
			ms[i].val = v
			return ms
		}
	}
	return append(ms, member{key, v})
}

func limitError(name string, got string, limit string, attr string) error {
	return fmt.Errorf("%s %s exceeds this image's limit %s (manifest agent.%s, measured in the boot policy); send %s of at most %s",
		name, got, limit, attr, name, limit)
}

// checkInt checks an integer option against limit (min is the smallest
// accepted value; Ollama truncates fractions).
func checkInt(name string, raw json.RawMessage, limit, min int, attr string) error {
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil {
		return fmt.Errorf("%s must be a number, got %s", name, raw)
	}
	if f < float64(min) {
		return fmt.Errorf("%s %s is not allowed: this image limits it to %d..%d (manifest agent.%s); send a value in that range",
			name, raw, min, limit, attr)
	}
	if math.Trunc(f) > float64(limit) {
		return limitError(name, string(raw), strconv.Itoa(limit), attr)
	}
	return nil
}

// keepAlive parses an Ollama keep_alive: a number of seconds or a Go
// duration string; negative means forever.
func keepAlive(raw json.RawMessage) (time.Duration, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, err
	}
	switch t := v.(type) {
	case float64:
		if t < 0 || t > math.MaxInt32 {
			return -1, nil
		}
		return time.Duration(int64(t)) * time.Second, nil
	case string:
		d, err := time.ParseDuration(t)
		if err != nil {
			return 0, fmt.Errorf("keep_alive %q is not a duration such as \"5m\"", t)
		}
		if d < 0 {
			return -1, nil
		}
		return d, nil
	}
	return 0, fmt.Errorf("keep_alive must be a number of seconds or a duration string, got %s", raw)
}

// applyLimits checks (and completes) a request body for path against lim;
// it returns the body to forward or an error for a 400.
func applyLimits(lim policy.Limits, path string, body []byte) ([]byte, error) {
	kind, ok := limitPaths[path]
	if !ok || lim.IsZero() {
		return body, nil
	}
	top, err := decodeObject(body, "request body")
	if err != nil {
		return nil, err
	}
	changed := false
	// keep_alive: top level on the native API; checked wherever it appears.
	if lim.KeepAliveSeconds > 0 {
		limit := time.Duration(lim.KeepAliveSeconds) * time.Second
		if i := find(top, "keep_alive"); i >= 0 {
			d, err := keepAlive(top[i].val)
			if err != nil {
				return nil, err
			}
			if d < 0 || d > limit {
				return nil, limitError("keep_alive", string(top[i].val), fmt.Sprintf("%q", limit.String()), "max_keep_alive")
			}
		} else if kind.native {
			top = set(top, "keep_alive", []byte(strconv.Itoa(lim.KeepAliveSeconds)))
			changed = true
		}
	}
	// max_tokens: the OpenAI endpoints' num_predict.
	if !kind.native && lim.NumPredict > 0 {
		found := false
		for _, k := range []string{"max_tokens", "max_completion_tokens"} {
			if i := find(top, k); i >= 0 {
				found = true
				if err := checkInt(k, top[i].val, lim.NumPredict, 0, "max_num_predict"); err != nil {
					return nil, err
				}
			}
		}
		if !found && kind.fillPredict {
			top = set(top, "max_tokens", []byte(strconv.Itoa(lim.NumPredict)))
			changed = true
		}
	}
	// options: the native API's num_ctx and num_predict.
	oi := find(top, "options")
	var opts []member
	if oi >= 0 {
		if opts, err = decodeObject(top[oi].val, "options"); err != nil {
			return nil, err
		}
	}
	optsChanged := false
	if lim.NumCtx > 0 {
		if i := find(opts, "num_ctx"); i >= 0 {
			if err := checkInt("options.num_ctx", opts[i].val, lim.NumCtx, 1, "max_num_ctx"); err != nil {
				return nil, err
			}
		}
	}
	if lim.NumPredict > 0 {
		if i := find(opts, "num_predict"); i >= 0 {
			if err := checkInt("options.num_predict", opts[i].val, lim.NumPredict, 0, "max_num_predict"); err != nil {
				return nil, err
			}
		} else if kind.native && kind.fillPredict {
			opts = set(opts, "num_predict", []byte(strconv.Itoa(lim.NumPredict)))
			optsChanged = true
		}
	}
	if optsChanged {
		top = set(top, "options", encodeObject(opts))
		changed = true
	}
	if !changed {
		return body, nil
	}
	return encodeObject(top), nil
}
