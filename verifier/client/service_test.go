package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/attestation"
)

func TestServiceStatusPinsTheAttestedKey(t *testing.T) {
	ready := true
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if ready {
			w.Write([]byte(`{"status":"ready","models":["tiny:latest"]}`))
			return
		}
		w.WriteHeader(503)
		w.Write([]byte(`{"status":"not ready","error":"model tiny:latest does not load: input/output error"}`))
	}))
	defer srv.Close()
	spki := attestation.SPKIHash(srv.Certificate().RawSubjectPublicKeyInfo)
	s, err := ServiceStatus(context.Background(), srv.URL, spki)
	if err != nil || !s.Ready {
		t.Fatalf("ready service: %+v %v", s, err)
	}
	ready = false
	s, err = ServiceStatus(context.Background(), srv.URL, spki)
	if err != nil || s.Ready || !strings.Contains(s.Error, "input/output error") {
		t.Fatalf("down service: %+v %v", s, err)
	}
	var other [32]byte
	if _, err := ServiceStatus(context.Background(), srv.URL, other); err == nil || !strings.Contains(err.Error(), "TLS key changed") {
		t.Fatalf("a different TLS key was accepted: %v", err)
	}
}
