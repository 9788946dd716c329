package gguf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func tiny(t testing.TB, seed int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := GenerateTiny(&b, seed); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// goldenTiny pins the bytes of GenerateTiny(seed 1): the model is an input to
// reproducible images, so any change to it must be deliberate.
const goldenTiny = "167fb59562881ad4ff7da265ffb0e4dee8a78aaaec3f26608411ee490008f9f4"

func TestGenerateTinyDeterministic(t *testing.T) {
	a, b := tiny(t, 1), tiny(t, 1)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different bytes")
	}
	if bytes.Equal(a, tiny(t, 2)) {
		t.Fatal("different seeds, same bytes")
	}
	sum := sha256.Sum256(a)
	got := hex.EncodeToString(sum[:])
	t.Logf("tiny model: %d bytes, sha256 %s", len(a), got)
	if got != goldenTiny {
		t.Fatalf("GenerateTiny(1) sha256 = %s, want %s", got, goldenTiny)
	}
	if len(a) < 300<<10 || len(a) > 1<<20 {
		t.Fatalf("size %d is not a few hundred KB", len(a))
	}
}

// tensorInfo is parsed here (the package's reader stops before it) to check
// the whole file layout.
type tensorInfo struct {
	name string
	dims []uint64
	typ  uint32
	off  uint64
}

func parseTensors(t *testing.T, file []byte, m *Metadata) ([]tensorInfo, int64) {
	t.Helper()
	rd := &reader{r: bufio.NewReader(bytes.NewReader(file[m.Size:]))}
	var ts []tensorInfo
	for i := uint64(0); i < m.TensorCount; i++ {
		name, err := rd.str(maxKeyLen)
		if err != nil {
			t.Fatal(err)
		}
		nd, _ := rd.u32()
		ti := tensorInfo{name: name}
		for d := uint32(0); d < nd; d++ {
			v, _ := rd.u64()
			ti.dims = append(ti.dims, v)
		}
		ti.typ, _ = rd.u32()
		ti.off, err = rd.u64()
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, ti)
	}
	end := m.Size + rd.n
	data := (end + alignment - 1) / alignment * alignment
	return ts, data
}

func TestTinyLayout(t *testing.T) {
	file := tiny(t, 1)
	m, err := ReadMetadata(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.Version != 3 || m.Architecture() != "llama" {
		t.Fatalf("version %d arch %q", m.Version, m.Architecture())
	}
	for k, want := range map[string]uint64{
		"llama.embedding_length": 64, "llama.block_count": 2, "llama.attention.head_count": 4,
		"llama.feed_forward_length": 128, "llama.context_length": 512,
	} {
		if got, ok := m.Uint(k); !ok || got != want {
			t.Errorf("%s = %d, want %d", k, got, want)
		}
	}
	toks, _ := m.Array("tokenizer.ggml.tokens")
	types, _ := m.Array("tokenizer.ggml.token_type")
	if len(toks.Values) != 320 || len(types.Values) != 320 {
		t.Fatalf("vocab %d/%d, want 320", len(toks.Values), len(types.Values))
	}
	seen := map[string]bool{}
	for i, v := range toks.Values {
		s := v.(string)
		if seen[s] {
			t.Fatalf("duplicate token %q", s)
		}
		seen[s] = true
		if i >= 3 && i < 259 {
			if want := "<0x" + strings.ToUpper(hex.EncodeToString([]byte{byte(i - 3)})) + ">"; s != want || types.Values[i].(int32) != TokenByte {
				t.Fatalf("token %d = %q type %v, want %q type 6", i, s, types.Values[i], want)
			}
		}
	}
	if toks.Values[0] != "<unk>" || toks.Values[1] != "<s>" || toks.Values[2] != "</s>" || toks.Values[259] != "▁" {
		t.Fatalf("special tokens wrong: %v %v %v %v", toks.Values[0], toks.Values[1], toks.Values[2], toks.Values[259])
	}

	ts, data := parseTensors(t, file, m)
	if len(ts) != 2+9*TinyLayers+1 {
		t.Fatalf("%d tensors", len(ts))
	}
	var params uint64
	var end uint64
	var out tensorInfo
	for _, ti := range ts {
		n := uint64(1)
		for _, d := range ti.dims {
			n *= d
		}
		params += n
		if ti.typ != ggmlF32 || ti.off%alignment != 0 {
			t.Fatalf("%s: type %d offset %d", ti.name, ti.typ, ti.off)
		}
		end = ti.off + n*4
		if ti.name == "output.weight" {
			out = ti
		}
	}
	if data+int64(end) > int64(len(file)) || int64(len(file))-(data+int64(end)) >= alignment {
		t.Fatalf("data ends at %d, file is %d bytes", data+int64(end), len(file))
	}
	if params < 120_000 || params > 130_000 {
		t.Fatalf("%d parameters, want about 124K", params)
	}
	// Output rows: zero exactly for special and non-printable byte tokens.
	for id := 0; id < 320; id++ {
		row := file[data+int64(out.off)+int64(id*TinyEmbd*4):][:TinyEmbd*4]
		zero := true
		for i := 0; i < len(row); i += 4 {
			if math.Float32frombits(binary.LittleEndian.Uint32(row[i:])) != 0 {
				zero = false
			}
		}
		wantZero := id < 3 || (id < 259 && (id-3 < 0x20 || id-3 > 0x7e))
		if zero != wantZero {
			t.Fatalf("output row %d (%q) zero=%v, want %v", id, toks.Values[id], zero, wantZero)
		}
	}
}

// TestReadMetadataStreams shows the reader stops after the key/value
// section: the rest of the "file" is an endless stream.
func TestReadMetadataStreams(t *testing.T) {
	file := tiny(t, 1)
	m, err := ReadMetadata(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	endless := io.MultiReader(bytes.NewReader(file[:m.Size]), zeros{})
	m2, err := ReadMetadata(endless)
	if err != nil || m2.Size != m.Size || len(m2.Keys) != len(m.Keys) {
		t.Fatalf("streaming read: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// build writes a GGUF header with the given key/values (in order).
func build(kvs ...any) []byte {
	var b bytes.Buffer
	w := &writer{w: bufio.NewWriter(&b)}
	w.raw([]byte(Magic))
	w.u32(3)
	w.u64(0)
	w.u64(uint64(len(kvs) / 2))
	for i := 0; i < len(kvs); i += 2 {
		w.kv(kvs[i].(string), kvs[i+1])
	}
	w.w.Flush()
	return b.Bytes()
}

func goodKVs() []any {
	return []any{
		"general.architecture", "llama",
		"llama.block_count", uint32(2),
		"llama.context_length", uint32(512),
		"llama.embedding_length", uint32(64),
		"llama.feed_forward_length", uint32(128),
		"llama.attention.head_count", uint32(4),
		"tokenizer.ggml.model", "llama",
		"tokenizer.ggml.tokens", []string{"a", "b"},
		"tokenizer.ggml.token_type", []int32{1, 1},
	}
}

func without(key string) []any {
	kv := goodKVs()
	var out []any
	for i := 0; i < len(kv); i += 2 {
		if kv[i] != key {
			out = append(out, kv[i], kv[i+1])
		}
	}
	return out
}

func with(key string, v any) []any {
	kv := goodKVs()
	for i := 0; i < len(kv); i += 2 {
		if kv[i] == key {
			kv[i+1] = v
		}
	}
	return kv
}

func TestValidate(t *testing.T) {
	check := func(name string, kvs []any, wantKey, wantText string) {
		t.Helper()
		m, err := ReadMetadata(bytes.NewReader(build(kvs...)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		err = m.Validate()
		if wantKey == "" {
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return
		}
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Key != wantKey || !strings.Contains(err.Error(), wantText) {
			t.Fatalf("%s: got %v, want error on %s containing %q", name, err, wantKey, wantText)
		}
	}
	check("good", goodKVs(), "", "")
	for _, k := range []string{
		"general.architecture", "llama.block_count", "llama.context_length", "llama.embedding_length",
		"llama.feed_forward_length", "llama.attention.head_count", "tokenizer.ggml.model",
		"tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
	} {
		check("missing "+k, without(k), k, "missing")
	}
	check("divide by zero", without("general.architecture"), "general.architecture", "divide by zero")
	check("zero blocks", with("llama.block_count", uint32(0)), "llama.block_count", "zero")
	check("string blocks", with("llama.block_count", "2"), "llama.block_count", "integer")
	check("heads", with("llama.attention.head_count", uint32(5)), "llama.attention.head_count", "does not divide")
	check("types short", with("tokenizer.ggml.token_type", []int32{1}), "tokenizer.ggml.token_type", "one entry per token")
	check("no tokens", with("tokenizer.ggml.tokens", []string{}), "tokenizer.ggml.tokens", "non-empty")
	check("empty arch", with("general.architecture", ""), "general.architecture", "non-empty")
}

func TestReadMetadataErrors(t *testing.T) {
	good := build(goodKVs()...)
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"empty":      {nil, "magic"},
		"not gguf":   {[]byte("PK\x03\x04xxxxxxxx"), "not a GGUF file"},
		"v1":         {append([]byte("GGUF\x01\x00\x00\x00"), make([]byte, 16)...), "obsolete"},
		"big endian": {append([]byte("GGUF\x00\x00\x00\x03"), make([]byte, 16)...), "big-endian"},
		"truncated":  {good[:len(good)-3], "unexpected EOF"},
		"huge array": {append(build()[:16], le64(1, "k", 9, 8, 1<<40)...), "exceeds the limit"},
		"bad type":   {append(build()[:16], le64(1, "k", 99)...), "unknown value type 99"},
		"dup key":    {build("a", uint32(1), "a", uint32(2)), "duplicate key"},
		"bad bool":   {append(build()[:16], le64(1, "k", 7, byte(2))...), "neither 0 nor 1"},
	} {
		_, err := ReadMetadata(bytes.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

// le64 encodes a raw key/value section: the key count, then strings as GGUF
// strings, ints as uint32 (or uint64 when larger) and bytes as bytes.
func le64(count uint64, parts ...any) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, count)
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(p)))
			b = append(b, p...)
		case int:
			if p > math.MaxUint32 {
				b = binary.LittleEndian.AppendUint64(b, uint64(p))
			} else {
				b = binary.LittleEndian.AppendUint32(b, uint32(p))
			}
		case byte:
			b = append(b, p)
		}
	}
	return b
}

func FuzzReadMetadata(f *testing.F) {
	file := tiny(f, 1)
	m, err := ReadMetadata(bytes.NewReader(file))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(file[:m.Size])
	f.Add(build(goodKVs()...))
	f.Add(build(without("llama.block_count")...))
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadMetadata(bytes.NewReader(in))
		if err != nil {
			return
		}
		if m.Size > int64(len(in)) || len(m.Keys) != len(m.KV) {
			t.Fatalf("inconsistent metadata: size %d of %d, %d keys %d values", m.Size, len(in), len(m.Keys), len(m.KV))
		}
		_ = m.Validate() // must not panic on any parsed input
	})
}

// BenchmarkReadMetadata reports how much cheaper validating a model's
// metadata is than the baseline "full-hash" (reading and hashing the whole
// file), on the tiny model; on a multi-GB model the ratio grows with size.
func BenchmarkReadMetadata(b *testing.B) {
	file := tiny(b, 1)
	start := time.Now()
	for i := 0; i < b.N; i++ {
		m, err := ReadMetadata(bytes.NewReader(file))
		if err != nil || m.Validate() != nil {
			b.Fatal(err)
		}
	}
	meta := time.Since(start)
	b.StopTimer()
	start = time.Now()
	for i := 0; i < b.N; i++ {
		sha256.Sum256(file)
	}
	full := time.Since(start)
	b.ReportMetric(float64(full)/float64(meta), "x-vs-full-hash")
}
