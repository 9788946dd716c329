package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Tiny model shape. The parameter count is about 124K (the Ollama
// "model_type").
const (
	TinyEmbd    = 64
	TinyLayers  = 2
	TinyHeads   = 4
	TinyFF      = 128
	TinyContext = 512
)

// TinyVocab returns the tiny model's vocabulary and token types: <unk>, <s>,
// </s>, the 256 byte tokens <0x00>..<0xFF>, "▁", the letters and a few
// words (320 tokens, all distinct).
func TinyVocab() ([]string, []int32) {
	toks := []string{"<unk>", "<s>", "</s>"}
	types := []int32{TokenUnknown, TokenControl, TokenControl}
	for b := 0; b < 256; b++ {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
		types = append(types, TokenByte)
	}
	toks = append(toks, "▁")
	for c := 'a'; c <= 'z'; c++ {
		toks = append(toks, string(c))
	}
	for c := 'A'; c <= 'Z'; c++ {
		toks = append(toks, string(c))
	}
	toks = append(toks, "▁the", "▁a", "▁is", "▁hello", "▁world", "▁tiny", "▁model", ".")
	for len(types) < len(toks) {
		types = append(types, TokenNormal)
	}
	return toks, types
}

// silent reports whether token id must never be generated: special tokens
// and byte tokens that are not printable ASCII (control bytes and lone
// UTF-8 fragments). Their output rows are zero.
func silent(id int, types []int32) bool {
	switch types[id] {
	case TokenUnknown, TokenControl:
		return true
	case TokenByte:
		b := id - 3
		return b < 0x20 || b > 0x7e
	}
	return false
}

// rng is splitmix64: tiny, fast and fully specified, so the weights never
// depend on a library's generator.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// uniform returns a float32 in [-a, a).
func (r *rng) uniform(a float32) float32 {
	u := float32(r.next()>>40) / float32(1<<24) // [0,1)
	return (2*u - 1) * a
}

type tensor struct {
	name string
	dims []uint64 // ggml order: dims[0] is the row length
	fill func(i int) float32
}

func (t *tensor) n() int {
	n := 1
	for _, d := range t.dims {
		n *= int(d)
	}
	return n
}

// tinyTensors lists the llama tensors in file order with their values.
func tinyTensors(seed int64, vocab int, types []int32) []tensor {
	r := &rng{s: uint64(seed)}
	random := func(fanIn int) func(int) float32 {
		a := float32(1 / math.Sqrt(float64(fanIn)))
		return func(int) float32 { return r.uniform(a) }
	}
	ones := func(int) float32 { return 1 }
	ts := []tensor{{name: "token_embd.weight", dims: []uint64{TinyEmbd, uint64(vocab)}, fill: func(int) float32 { return r.uniform(1) }}}
	for l := 0; l < TinyLayers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		ts = append(ts,
			tensor{p + "attn_norm.weight", []uint64{TinyEmbd}, ones},
			tensor{p + "attn_q.weight", []uint64{TinyEmbd, TinyEmbd}, random(TinyEmbd)},
			tensor{p + "attn_k.weight", []uint64{TinyEmbd, TinyEmbd}, random(TinyEmbd)},
			tensor{p + "attn_v.weight", []uint64{TinyEmbd, TinyEmbd}, random(TinyEmbd)},
			tensor{p + "attn_output.weight", []uint64{TinyEmbd, TinyEmbd}, random(TinyEmbd)},
			tensor{p + "ffn_norm.weight", []uint64{TinyEmbd}, ones},
			tensor{p + "ffn_gate.weight", []uint64{TinyEmbd, TinyFF}, random(TinyEmbd)},
			tensor{p + "ffn_down.weight", []uint64{TinyFF, TinyEmbd}, random(TinyFF)},
			tensor{p + "ffn_up.weight", []uint64{TinyEmbd, TinyFF}, random(TinyEmbd)},
		)
	}
	outRand := random(TinyEmbd)
	ts = append(ts,
		tensor{"output_norm.weight", []uint64{TinyEmbd}, ones},
		tensor{"output.weight", []uint64{TinyEmbd, uint64(vocab)}, func(i int) float32 {
			v := outRand(i) // always draw, so rows do not shift the stream
			if silent(i/TinyEmbd, types) {
				return 0
			}
			return v
		}},
	)
	return ts
}

// writer is a little-endian GGUF encoder that remembers the first error.
type writer struct {
	w   *bufio.Writer
	n   int64
	err error
	buf [8]byte
}

func (w *writer) raw(b []byte) {
	if w.err != nil {
		return
	}
	var n int
	n, w.err = w.w.Write(b)
	w.n += int64(n)
}
func (w *writer) u32(v uint32) { binary.LittleEndian.PutUint32(w.buf[:4], v); w.raw(w.buf[:4]) }
func (w *writer) u64(v uint64) { binary.LittleEndian.PutUint64(w.buf[:8], v); w.raw(w.buf[:8]) }
func (w *writer) f32(v float32) {
	w.u32(math.Float32bits(v))
}
func (w *writer) str(s string) { w.u64(uint64(len(s))); w.raw([]byte(s)) }
func (w *writer) pad() {
	for w.n%alignment != 0 {
		w.raw([]byte{0})
	}
}

// kv writes one key/value. v is uint32, float32, string, bool, []string,
// []float32 or []int32.
// writeArray writes an array value: element type, length, elements.
func writeArray[T any](w *writer, elem ValueType, v []T, put func(T)) {
	w.u32(uint32(TypeArray))
	w.u32(uint32(elem))
	w.u64(uint64(len(v)))
	for _, x := range v {
		put(x)
	}
}

func (w *writer) kv(key string, v any) {
	w.str(key)
	switch v := v.(type) {
	case uint32:
		w.u32(uint32(TypeUint32))
		w.u32(v)
	case float32:
		w.u32(uint32(TypeFloat32))
		w.f32(v)
	case string:
		w.u32(uint32(TypeString))
		w.str(v)
	case bool:
		w.u32(uint32(TypeBool))
		b := byte(0)
		if v {
			b = 1
		}
		w.raw([]byte{b})
	case []string:
		writeArray(w, TypeString, v, w.str)
	case []float32:
		writeArray(w, TypeFloat32, v, w.f32)
	case []int32:
		writeArray(w, TypeInt32, v, func(x int32) { w.u32(uint32(x)) })
	default:
		panic(fmt.Sprintf("gguf: unsupported kv type %T", v))
	}
}

// GenerateTiny writes a tiny llama-architecture GGUF v3 model (~490 KB of
// F32 weights) whose bytes depend only on seed. Ollama loads it and
// generates deterministic printable text from it at temperature 0.
func GenerateTiny(w io.Writer, seed int64) error {
	toks, types := TinyVocab()
	scores := make([]float32, len(toks))
	for i := range scores {
		if types[i] == TokenNormal {
			// Longer pieces win SentencePiece merges.
			scores[i] = float32(len(toks[i])) - 10
		} else {
			scores[i] = -1000
		}
	}
	ts := tinyTensors(seed, len(toks), types)

	bw := &writer{w: bufio.NewWriterSize(w, 64<<10)}
	bw.raw([]byte(Magic))
	bw.u32(3)
	bw.u64(uint64(len(ts)))
	kvs := []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"general.name", "tdforge-tiny"},
		{"general.file_type", uint32(0)}, // all F32
		{"general.alignment", uint32(alignment)},
		{"llama.vocab_size", uint32(len(toks))},
		{"llama.context_length", uint32(TinyContext)},
		{"llama.embedding_length", uint32(TinyEmbd)},
		{"llama.block_count", uint32(TinyLayers)},
		{"llama.feed_forward_length", uint32(TinyFF)},
		{"llama.attention.head_count", uint32(TinyHeads)},
		{"llama.attention.head_count_kv", uint32(TinyHeads)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.rope.dimension_count", uint32(TinyEmbd / TinyHeads)},
		{"llama.rope.freq_base", float32(10000)},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", toks},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
	}
	bw.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		bw.kv(kv.k, kv.v)
	}
	var off uint64
	for _, t := range ts {
		bw.str(t.name)
		bw.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			bw.u64(d)
		}
		bw.u32(ggmlF32)
		bw.u64(off)
		size := uint64(t.n() * 4)
		off += (size + alignment - 1) / alignment * alignment
	}
	bw.pad()
	for _, t := range ts {
		for i, n := 0, t.n(); i < n; i++ {
			bw.f32(t.fill(i))
		}
		bw.pad()
	}
	if bw.err == nil {
		bw.err = bw.w.Flush()
	}
	if bw.err != nil {
		return fmt.Errorf("gguf: writing tiny model: %w", bw.err)
	}
	return nil
}
