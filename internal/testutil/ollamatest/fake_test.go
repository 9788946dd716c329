package ollamatest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/testutil/netutil"
)

func TestFake(t *testing.T) {
	get := func(url string) (int, string) {
		t.Helper()
		code, b := netutil.Get(t, url)
		return code, string(b)
	}
	up, hits := Fake(t, nil)
	if code, body := get(up.URL + "/api/version"); code != 200 || body != `{"version":"0.5.7"}` {
		t.Fatalf("version: %d %s", code, body)
	}
	if code, body := get(up.URL + "/api/chat"); code != 200 || strings.Count(body, "\n") != 4 || !strings.Contains(body, `"eval_count":3`) {
		t.Fatalf("chat: %d %q", code, body)
	}
	if code, _ := get(up.URL + "/api/pull"); code != 404 || hits.Load() != 3 {
		t.Fatalf("pull: %d, hits %d", code, hits.Load())
	}
	up, _ = Fake(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "extra") })
	if _, body := get(up.URL + "/api/tags"); body != "extra" {
		t.Fatalf("extra handler not used: %s", body)
	}
}
