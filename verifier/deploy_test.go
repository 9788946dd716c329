package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The arguments of the deployment files (deploy/) are flags `verifier
// serve` accepts, with nothing left over and no development-only flag.
// (deploy's own test checks the manifests' other properties.)
func TestDeployArgsParse(t *testing.T) {
	unit, err := os.ReadFile("../deploy/systemd/tdforge-verifier.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ExecStart=((?:.*\\\n)*.*)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("no ExecStart in the unit")
	}
	exec := strings.Fields(strings.ReplaceAll(string(m[1]), "\\\n", " "))
	if len(exec) < 2 || exec[1] != "serve" {
		t.Fatalf("ExecStart %q", exec)
	}
	sets := map[string][]string{"systemd ExecStart": exec[2:]}

	raw, err := os.ReadFile("../deploy/kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(raw, &d); err != nil {
		t.Fatal(err)
	}
	args := d.Spec.Template.Spec.Containers[0].Args
	if len(args) < 1 || args[0] != "serve" {
		t.Fatalf("container args %q", args)
	}
	sets["Kubernetes container args"] = args[1:]

	for name, args := range sets {
		fs, a := serveFlags(io.Discard)
		if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
			t.Fatalf("%s %q: %v (left over: %q)", name, args, err, fs.Args())
		}
		if a.insecure || a.cfg.Dev || a.cfg.AllowSimulated || a.simRoot != "" || len(a.accept) > 0 {
			t.Fatalf("%s: a development flag in a deployment: %q", name, args)
		}
		if err := checkListen(a.listen, a.insecure, a.tlsCert, a.tlsKey); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for flag, v := range map[string]string{"reference-dir": a.cfg.ReferenceDir, "reference-key": a.cfg.ReferenceKey, "signing-key": a.signingKey, "nonce-secret": a.nonceFile} {
			if v == "" {
				t.Fatalf("%s: no --%s", name, flag)
			}
		}
	}
}
