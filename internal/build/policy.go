package build

import (
	"context"
	"fmt"
	"net"
	"path"
	"strconv"
	"time"

	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// buildPolicy derives the boot policy from the manifest and the disk layout
// and writes it.
func (p *pipeline) buildPolicy(ctx context.Context) error {
	pol, err := p.policyObject()
	if err != nil {
		return err
	}
	b, err := pol.Marshal()
	if err != nil {
		return fmt.Errorf("manifest produces an invalid boot policy: %w", err)
	}
	p.pol = pol
	p.policyJSON = b
	return p.write(imagedir.Policy, b, 0o644)
}

// policyObject derives the boot policy without validating or writing it.
func (p *pipeline) policyObject() (*policy.Policy, error) {
	m := p.m
	pol := &policy.Policy{
		Version: policy.SchemaVersion,
		Image:   policy.Image{Name: m.Image.Name, Version: m.Image.Version, Dev: m.Image.Dev, ReferenceURL: m.Image.ReferenceURL},
		TDX:     policy.TDX{Simulate: m.TDX.Simulate, Debug: m.TDX.Debug},
		Kernel:  policy.Kernel{Release: p.modules.release, Modules: append([]string{}, p.modules.paths...)},
		Network: policy.Network{Mode: m.Network.Mode, Address: m.Network.Address, Gateway: m.Network.Gateway},
		Agent: policy.Agent{
			Listen: m.Agent.Listen, TLS: m.Agent.TLS, PlainHTTP: m.Agent.PlainHTTP,
			Upstream: m.Agent.Upstream, WebUIPayload: m.Agent.WebUI, WebUIPath: m.Agent.WebUIPath,
			AttestationService: m.Agent.AttestationService,
			Limits: policy.Limits{NumCtx: m.Agent.MaxNumCtx, NumPredict: m.Agent.MaxNumPredict,
				KeepAliveSeconds: int(m.Agent.MaxKeepAlive / time.Second)},
		},
	}
	if pol.Kernel.Modules == nil {
		pol.Kernel.Modules = []string{}
	}
	if pol.Network.Mode != "none" {
		pol.Network.Interface = "eth0"
	}
	if p.layout != nil {
		pol.Disk.GUID = p.layout.DiskGUID
		for _, part := range p.layout.Partitions {
			pol.Payloads = append(pol.Payloads, part.Policy(path.Join(payloadRoot, part.Name)))
		}
	}
	if pol.Payloads == nil {
		pol.Payloads = []policy.Payload{}
	}
	p.encryptPolicy(pol)
	for i, s := range m.Services {
		cmd := s.Command
		if s.Payload != "" {
			cmd = path.Join(payloadRoot, s.Payload, s.Command)
		}
		needs := []string{}
		seen := map[string]bool{}
		for _, n := range append([]string{s.Payload}, s.Payloads...) {
			if n != "" && !seen[n] {
				seen[n] = true
				needs = append(needs, n)
			}
		}
		env := map[string]string{}
		for k, v := range s.Env {
			env[k] = v
		}
		restart := s.Restart
		if restart == "" {
			restart = "always"
		}
		user := s.User
		if user == "" {
			user = s.Name
		}
		pol.Services = append(pol.Services, policy.Service{
			Name: s.Name, Command: cmd, Args: nonNil(s.Args), Env: env, User: user,
			UID: serviceUID(i), GID: serviceUID(i), After: nonNil(s.After), Payloads: needs, Restart: restart,
		})
	}
	// The agent always runs, even when payloads fail, so failures can be
	// attested; it depends on nothing.
	pol.Services = append(pol.Services, policy.Service{
		Name: "agent", Command: agentCommand, Args: []string{"--policy", policy.Path}, Env: map[string]string{},
		User: "agent", UID: agentUID, GID: agentUID, After: []string{}, Payloads: []string{}, Restart: "always",
	})
	for _, v := range m.Volumes {
		pol.Volumes = append(pol.Volumes, policy.Volume{
			Name: v.Name, SizeBytes: v.SizeBytes, Key: v.Key, Users: nonNil(v.Users),
			UUID: policy.VolumeUUID(m.Image.Name, v.Name), Mount: policy.VolumeMount(v.Name),
		})
	}
	return pol, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return append([]string{}, s...)
}

// listenPort extracts the port of a listen address like ":8443".
func listenPort(addr string) int {
	if addr == "" {
		return 0
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}
