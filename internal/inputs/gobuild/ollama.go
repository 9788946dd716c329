package gobuild

// Ollama057 is the pinned build of Ollama v0.5.7: CPU-only cgo, linked
// statically (glibc, libstdc++ and libgcc from the build toolchain's static
// archives), with the pure-Go DNS resolver and user lookup so that the
// static glibc never needs NSS modules at run time. The smoke check runs
// `ollama --version` against an unused address.
var Ollama057 = Spec{
	Module:  "github.com/ollama/ollama",
	Version: "v0.5.7",
	Sum:     "h1:YFxF3UYc3TbOH/j/OhJoxl4LOvPQRcuKUdI5txs/pkc=",
	CGO:     true,
	Static:  true,
	Tags:    []string{"netgo", "osusergo"},
	Ldflags: []string{"-X", "github.com/ollama/ollama/version.Version=0.5.7"},
	Smoke: &Smoke{
		Args: []string{"--version"},
		Env:  []string{"OLLAMA_HOST=127.0.0.1:9", "HOME=/nonexistent"},
		Want: "0.5.7",
	},
}
