package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Limits that keep a hostile header from exhausting memory. Real models
// stay far below them (a 150K-token vocabulary, a few dozen keys).
const (
	maxKeyLen    = 64 << 10
	maxStringLen = 16 << 20
	maxArrayLen  = 1 << 24
	maxKVs       = 1 << 16
	maxTensors   = 1 << 24
	maxDepth     = 3
	maxTotal     = 512 << 20 // bytes of metadata read in all
)

// Metadata is the header and key/value section of a GGUF file.
type Metadata struct {
	Version     uint32
	TensorCount uint64
	Size        int64          // bytes of header and key/value section
	Keys        []string       // in file order
	KV          map[string]any // uint8..float64, bool, string or Array
}

type reader struct {
	r     *bufio.Reader
	n     int64
	depth int
	buf   [8]byte
}

var errTooBig = errors.New("metadata section exceeds 512 MiB")

func (r *reader) full(b []byte) error {
	if r.n+int64(len(b)) > maxTotal {
		return errTooBig
	}
	_, err := io.ReadFull(r.r, b)
	r.n += int64(len(b))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (r *reader) u8() (uint8, error) {
	err := r.full(r.buf[:1])
	return r.buf[0], err
}
func (r *reader) u16() (uint16, error) {
	err := r.full(r.buf[:2])
	return binary.LittleEndian.Uint16(r.buf[:2]), err
}
func (r *reader) u32() (uint32, error) {
	err := r.full(r.buf[:4])
	return binary.LittleEndian.Uint32(r.buf[:4]), err
}
func (r *reader) u64() (uint64, error) {
	err := r.full(r.buf[:8])
	return binary.LittleEndian.Uint64(r.buf[:8]), err
}

func (r *reader) str(limit uint64) (string, error) {
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", fmt.Errorf("string length %d exceeds the limit %d", n, limit)
	}
	b := make([]byte, n)
	if err := r.full(b); err != nil {
		return "", err
	}
	return string(b), nil
}

func (r *reader) value(t ValueType) (any, error) {
	switch t {
	case TypeUint8:
		return r.u8()
	case TypeInt8:
		v, err := r.u8()
		return int8(v), err
	case TypeUint16:
		return r.u16()
	case TypeInt16:
		v, err := r.u16()
		return int16(v), err
	case TypeUint32:
		return r.u32()
	case TypeInt32:
		v, err := r.u32()
		return int32(v), err
	case TypeFloat32:
		v, err := r.u32()
		return math.Float32frombits(v), err
	case TypeBool:
		v, err := r.u8()
		if err == nil && v > 1 {
			return nil, fmt.Errorf("bool value %d is neither 0 nor 1", v)
		}
		return v == 1, err
	case TypeString:
		return r.str(maxStringLen)
	case TypeUint64:
		return r.u64()
	case TypeInt64:
		v, err := r.u64()
		return int64(v), err
	case TypeFloat64:
		v, err := r.u64()
		return math.Float64frombits(v), err
	case TypeArray:
		if r.depth >= maxDepth {
			return nil, fmt.Errorf("arrays nested deeper than %d", maxDepth)
		}
		et, err := r.u32()
		if err != nil {
			return nil, err
		}
		n, err := r.u64()
		if err != nil {
			return nil, err
		}
		if n > maxArrayLen {
			return nil, fmt.Errorf("array length %d exceeds the limit %d", n, maxArrayLen)
		}
		if ValueType(et) > TypeFloat64 {
			return nil, fmt.Errorf("array of unknown value type %d", et)
		}
		// Grow as elements arrive: a lying count fails at EOF, not at make.
		a := Array{Elem: ValueType(et), Values: make([]any, 0, min(n, 4096))}
		r.depth++
		for i := uint64(0); i < n; i++ {
			v, err := r.value(ValueType(et))
			if err != nil {
				r.depth--
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			a.Values = append(a.Values, v)
		}
		r.depth--
		return a, nil
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

// ReadMetadata reads the GGUF header and key/value section from r and stops
// there: tensor infos and tensor data are not read, so it is cheap on a
// multi-GB model. Versions 2 and 3 (little-endian) are supported.
func ReadMetadata(r io.Reader) (*Metadata, error) {
	rd := &reader{r: bufio.NewReaderSize(r, 64<<10)}
	var magic [4]byte
	if err := rd.full(magic[:]); err != nil {
		return nil, fmt.Errorf("gguf: reading magic: %w", err)
	}
	if string(magic[:]) != Magic {
		return nil, fmt.Errorf("gguf: not a GGUF file (magic %q, want %q)", magic[:], Magic)
	}
	ver, err := rd.u32()
	if err != nil {
		return nil, fmt.Errorf("gguf: reading version: %w", err)
	}
	switch {
	case ver == 2 || ver == 3:
	case ver == 1:
		return nil, errors.New("gguf: version 1 is obsolete; convert the model with a current llama.cpp")
	case ver&0xffff == 0 && ver != 0:
		return nil, fmt.Errorf("gguf: big-endian GGUF (version field %#x) is not supported; use a little-endian model", ver)
	default:
		return nil, fmt.Errorf("gguf: unsupported version %d (want 2 or 3)", ver)
	}
	m := &Metadata{Version: ver, KV: map[string]any{}}
	if m.TensorCount, err = rd.u64(); err != nil {
		return nil, fmt.Errorf("gguf: reading tensor count: %w", err)
	}
	if m.TensorCount > maxTensors {
		return nil, fmt.Errorf("gguf: tensor count %d exceeds the limit %d", m.TensorCount, maxTensors)
	}
	nkv, err := rd.u64()
	if err != nil {
		return nil, fmt.Errorf("gguf: reading key count: %w", err)
	}
	if nkv > maxKVs {
		return nil, fmt.Errorf("gguf: key count %d exceeds the limit %d", nkv, maxKVs)
	}
	for i := uint64(0); i < nkv; i++ {
		k, err := rd.str(maxKeyLen)
		if err != nil {
			return nil, fmt.Errorf("gguf: key %d: %w", i, err)
		}
		if k == "" {
			return nil, fmt.Errorf("gguf: key %d is empty", i)
		}
		if _, dup := m.KV[k]; dup {
			return nil, fmt.Errorf("gguf: duplicate key %q", k)
		}
		t, err := rd.u32()
		if err != nil {
			return nil, fmt.Errorf("gguf: key %q: reading type: %w", k, err)
		}
		v, err := rd.value(ValueType(t))
		if err != nil {
			return nil, fmt.Errorf("gguf: key %q: %w", k, err)
		}
		m.Keys = append(m.Keys, k)
		m.KV[k] = v
	}
	m.Size = rd.n
	return m, nil
}

// String returns a string value.
func (m *Metadata) String(key string) (string, bool) {
	s, ok := m.KV[key].(string)
	return s, ok
}

// Uint returns a non-negative integer value of any integer type.
func (m *Metadata) Uint(key string) (uint64, bool) {
	switch v := m.KV[key].(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Array returns an array value.
func (m *Metadata) Array(key string) (Array, bool) {
	a, ok := m.KV[key].(Array)
	return a, ok
}

// Architecture returns general.architecture ("" when absent).
func (m *Metadata) Architecture() string {
	s, _ := m.String("general.architecture")
	return s
}

// ValidationError names a missing or unusable metadata key.
type ValidationError struct {
	Key    string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("gguf: model metadata key %q %s", e.Key, e.Reason)
}

const crashNote = "; Ollama divides by it and the whole server panics (integer divide by zero). Use a complete GGUF export of the model"

// Validate refuses models that Ollama cannot load safely: it checks the keys
// that Ollama and llama.cpp require to be present and positive.
func (m *Metadata) Validate() error {
	arch, ok := m.KV["general.architecture"]
	if !ok {
		return &ValidationError{"general.architecture", "is missing: it selects every other <arch>.* key" + crashNote}
	}
	if s, _ := arch.(string); s == "" {
		return &ValidationError{"general.architecture", "must be a non-empty string" + crashNote}
	}
	a := m.Architecture()
	for _, k := range []string{"block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count"} {
		key := a + "." + k
		v, ok := m.KV[key]
		if !ok {
			return &ValidationError{key, "is missing" + crashNote}
		}
		// Some architectures give per-layer values as an array.
		if arr, isArr := v.(Array); isArr && (k == "feed_forward_length" || k == "attention.head_count") {
			if len(arr.Values) == 0 {
				return &ValidationError{key, "is an empty array" + crashNote}
			}
			continue
		}
		n, ok := m.Uint(key)
		if !ok {
			return &ValidationError{key, fmt.Sprintf("must be a non-negative integer, not %T", v)}
		}
		if n == 0 {
			return &ValidationError{key, "is zero" + crashNote}
		}
	}
	if e, _ := m.Uint(a + ".embedding_length"); e > 0 {
		if h, ok := m.Uint(a + ".attention.head_count"); ok && e%h != 0 {
			return &ValidationError{a + ".attention.head_count", fmt.Sprintf("(%d) does not divide %s.embedding_length (%d)", h, a, e)}
		}
	}
	if s, ok := m.String("tokenizer.ggml.model"); !ok || s == "" {
		if _, present := m.KV["tokenizer.ggml.model"]; !present {
			return &ValidationError{"tokenizer.ggml.model", "is missing: Ollama cannot tokenize prompts without it"}
		}
		return &ValidationError{"tokenizer.ggml.model", "must be a non-empty string"}
	}
	toks, ok := m.KV["tokenizer.ggml.tokens"]
	if !ok {
		return &ValidationError{"tokenizer.ggml.tokens", "is missing: the vocabulary size comes from it" + crashNote}
	}
	ta, ok := toks.(Array)
	if !ok || ta.Elem != TypeString || len(ta.Values) == 0 {
		return &ValidationError{"tokenizer.ggml.tokens", "must be a non-empty array of strings" + crashNote}
	}
	tt, ok := m.KV["tokenizer.ggml.token_type"]
	if !ok {
		return &ValidationError{"tokenizer.ggml.token_type", "is missing: the tokenizer needs a type for every token"}
	}
	tta, ok := tt.(Array)
	if !ok || len(tta.Values) != len(ta.Values) {
		return &ValidationError{"tokenizer.ggml.token_type", fmt.Sprintf("must be an array with one entry per token (%d tokens)", len(ta.Values))}
	}
	return nil
}
