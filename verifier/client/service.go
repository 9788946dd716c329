package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Service is the agent's readiness as reported by its /readyz, read over a
// connection pinned to the attested TLS key. It is information about the
// running service, not part of the trust verdict: a TD can be exactly what
// was measured and still have a service down (for example when the host
// corrupted a payload and dm-verity refuses to read it).
type Service struct {
	Ready  bool           `json:"ready"`
	Status map[string]any `json:"status,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// ServiceStatus fetches /readyz from baseURL, refusing any TLS key other
// than spki (the key the attestation bound).
func ServiceStatus(ctx context.Context, baseURL string, spki [32]byte) (*Service, error) {
	u, err := ParseURL(baseURL)
	if err != nil {
		return nil, err
	}
	addr, _ := hostPort(u)
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialTLS(ctx, addr, u.Hostname())
			if err != nil {
				return nil, err
			}
			got, err := spkiOf(c)
			if err != nil || got != spki {
				c.Close()
				return nil, fmt.Errorf("the agent's TLS key changed since it was attested (man in the middle?)")
			}
			return c, nil
		},
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.JoinPath("/readyz").String(), nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("/readyz: %s: %v", resp.Status, err)
	}
	s := &Service{Ready: resp.StatusCode == http.StatusOK, Status: st}
	if e, ok := st["error"].(string); ok {
		s.Error = e
	}
	return s, nil
}
