package server

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
)

// newWebUI serves dir read-only through an os.Root (no escape through
// symlinks or ".."), without directory listings.
func newWebUI(dir string) (http.Handler, func() error, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("web UI directory: %w (check policy agent.webui_payload and webui_path)", err)
	}
	fsys := noListing{root.FS()}
	fileServer := http.FileServerFS(fsys)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fileServer.ServeHTTP(w, r)
	})
	return h, root.Close, nil
}

// noListing hides directories that have no index.html, so the file server
// answers 404 instead of listing them, and reports every open failure
// (such as a symlink escaping the root) as not found.
type noListing struct{ fs.FS }

func (n noListing) Open(name string) (fs.File, error) {
	f, err := n.FS.Open(name)
	if err != nil {
		// Includes links pointing outside the root: not part of the UI.
		return nil, fs.ErrNotExist
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		idx, err := n.FS.Open(path.Join(name, "index.html"))
		if err != nil {
			f.Close()
			return nil, fs.ErrNotExist
		}
		idx.Close()
	}
	return f, nil
}

// webUIUnavailable answers every web UI request with 503 and the reason.
func webUIUnavailable(cause error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusServiceUnavailable, "web UI unavailable: "+cause.Error()+"; see /v1/attestation for what this TD measured")
	})
}
