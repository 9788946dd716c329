package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/kbs"
	"github.com/tdforge/tdforge/verifier/verify"
)

// The appraisal itself is tested end to end in verifier/service; these
// tests stop before it.
func newTest(t *testing.T, max int) *httptest.Server {
	t.Helper()
	_, mux := newUnappraised(t, max)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// newUnappraised is a broker for at most max sessions whose appraisal
// fails, and the mux it serves on.
func newUnappraised(t *testing.T, max int) (*Broker, *http.ServeMux) {
	t.Helper()
	b, err := New(Config{ResourceDir: t.TempDir(), MaxSessions: max, MaxBody: 1 << 10, Log: log.New(io.Discard, "", 0),
		Appraise: func(context.Context, verify.Evidence, []byte, string) (*Appraisal, error) {
			return nil, errors.New("not reached")
		}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	b.Register(mux)
	return b, mux
}

func post(t *testing.T, srv *httptest.Server, path, body, cookie string) (int, kbs.ErrorInfo) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: kbs.Cookie, Value: cookie})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ei kbs.ErrorInfo
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &ei)
	return resp.StatusCode, ei
}

func TestAuthRefusals(t *testing.T) {
	srv := newTest(t, 10)
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"version":"1.0.0","tee":"tdx","extra-params":{}}`, 401, `protocol version "1.0.0" is not supported`},
		{`{"version":"0.1.0","tee":"tdx","extra-params":{}}`, 401, `protocol version "0.1.0"`},
		{`{"version":"0.4.0","tee":"snp","extra-params":{}}`, 401, `tee "snp" is not supported`},
		{`{"version":`, 400, "malformed JSON"},
		{`{"version":"0.4.0","tee":"tdx"} {}`, 400, "data after the document"},
		{`{"version":"0.4.0","tee":"tdx","extra-params":"` + strings.Repeat("x", 2000) + `"}`, 400, "larger than the limit"},
	} {
		code, ei := post(t, srv, kbs.PathAuth, c.body, "")
		if code != c.code || !strings.Contains(ei.Detail, c.want) || !strings.HasPrefix(ei.Type, kbs.ErrorTypePrefix) {
			t.Errorf("%.40s: %d %+v, want %d %q", c.body, code, ei, c.code, c.want)
		}
	}
	// Trustee's own example request (extra-params "") is accepted.
	if code, ei := post(t, srv, kbs.PathAuth, `{"version":"0.1.1","tee":"tdx","extra-params":""}`, ""); code != 200 {
		t.Fatalf("Trustee's example request: %d %+v", code, ei)
	}
}

// auth needs no evidence, so it must store nothing: a flood of auths
// leaves the session table (attested sessions only) empty.
func TestAuthStoresNothing(t *testing.T) {
	b, mux := newUnappraised(t, 2)
	for i := 0; i < 10; i++ {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("POST", kbs.PathAuth, strings.NewReader(`{"version":"0.4.0","tee":"tdx","extra-params":{}}`)))
		if rec.Code != 200 {
			t.Fatalf("auth %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if n := len(b.sessions); n != 0 {
		t.Fatalf("%d sessions stored by auth", n)
	}
}

func TestAttestRefusesBeforeAppraisal(t *testing.T) {
	srv := newTest(t, 10)
	start := func() (string, string) {
		resp, err := http.Post(srv.URL+kbs.PathAuth, "application/json", bytes.NewReader([]byte(`{"version":"0.4.0","tee":"tdx","extra-params":{}}`)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ch kbs.Challenge
		json.NewDecoder(resp.Body).Decode(&ch)
		for _, c := range resp.Cookies() {
			if c.Name == kbs.Cookie {
				return c.Value, ch.Nonce
			}
		}
		t.Fatal("no cookie")
		return "", ""
	}
	key := `{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}`
	for _, c := range []struct {
		body func(nonce string) string
		code int
		want string
	}{
		{func(n string) string {
			return `{"runtime-data":{"nonce":"other","tee-pubkey":` + key + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`
		}, 401, "replayed"},
		{func(n string) string {
			return `{"runtime-data":{"nonce":"` + n + `","tee-pubkey":{"kty":"oct"}},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`
		}, 400, `kty "oct"`},
		{func(n string) string {
			return `{"runtime-data":{"nonce":"` + n + `","tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`
		}, 400, "too small"},
		{func(n string) string {
			return `{"runtime-data":{"nonce":"` + n + `","tee-pubkey":` + key + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":"{\"nvidia\":{}}"}}`
		}, 400, "other devices"},
		{func(n string) string {
			return `{"runtime-data":{"nonce":"` + n + `","tee-pubkey":` + key + `},"tee-evidence":{"primary_evidence":{"quote":"AAAA"},"additional_evidence":""}}`
		}, 400, "TDX quote"},
		{func(n string) string {
			return `{"runtime-data":{"nonce":"` + n + `","tee-pubkey":` + key + `},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`
		}, 400, "want TDX evidence"},
	} {
		cookie, n := start()
		code, ei := post(t, srv, kbs.PathAttest, c.body(n), cookie)
		if code != c.code || !strings.Contains(ei.Detail, c.want) {
			t.Errorf("%d %+v, want %d %q", code, ei, c.code, c.want)
		}
		// Any attempt spends the session.
		if code, ei := post(t, srv, kbs.PathAttest, c.body(n), cookie); code != 401 || !strings.Contains(ei.Detail, "no live session") {
			t.Errorf("second attempt: %d %+v", code, ei)
		}
	}
}
