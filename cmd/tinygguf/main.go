// Command tinygguf writes the deterministic tiny llama GGUF model used by
// tdforge's dev images and tests, or checks a GGUF file's metadata.
//
//	tinygguf [-seed N] -o tiny.gguf
//	tinygguf -check model.gguf
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/ollama/gguf"
)

func main() {
	seed := flag.Int64("seed", 1, "weight seed; the output bytes depend only on it")
	out := flag.String("o", "", "output path (written atomically)")
	check := flag.String("check", "", "validate this GGUF's metadata instead (reads only its header)")
	flag.Parse()
	if flag.NArg() != 0 || (*out == "") == (*check == "") {
		fmt.Fprintln(os.Stderr, "usage: tinygguf [-seed N] -o OUT.gguf | tinygguf -check MODEL.gguf")
		os.Exit(2)
	}
	if *check != "" {
		f, err := os.Open(*check)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tinygguf:", err)
			os.Exit(1)
		}
		defer f.Close()
		m, err := gguf.ReadMetadata(f)
		if err == nil {
			err = m.Validate()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "tinygguf: %s: %v\n", *check, err)
			os.Exit(1)
		}
		fmt.Printf("%s: GGUF v%d, architecture %s, %d tensors, %d keys: ok\n", *check, m.Version, m.Architecture(), m.TensorCount, len(m.Keys))
		return
	}
	if err := fsutil.WriteFrom(*out, 0o644, func(w io.Writer) error { return gguf.GenerateTiny(w, *seed) }); err != nil {
		fmt.Fprintln(os.Stderr, "tinygguf:", err)
		os.Exit(1)
	}
}
