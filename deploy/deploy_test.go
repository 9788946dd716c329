package deploy_test

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// manifests decodes every document of deploy/kubernetes/*.yaml strictly
// (unknown or misspelt fields fail) into its k8s.io/api type.
func manifests(t *testing.T) (deps []*appsv1.Deployment, svcs []*corev1.Service, pdbs []*policyv1.PodDisruptionBudget) {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				d := &appsv1.Deployment{}
				deps, obj = append(deps, d), d
			case "v1 Service":
				s := &corev1.Service{}
				svcs, obj = append(svcs, s), s
			case "policy/v1 PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				pdbs, obj = append(pdbs, p), p
			default:
				t.Fatalf("%s document %d: unexpected %s %s", f, i, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s document %d (%s): %v", f, i, tm.Kind, err)
			}
		}
	}
	return
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// flags reads "--name=value" and "--name value" arguments.
func flags(t *testing.T, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			t.Fatalf("argument %q is not a flag (in %q)", a, args)
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			val = args[i+1]
			i++
		}
		m[name] = val
	}
	return m
}

// unsafe flags never belong in a deployment.
var unsafe = []string{"dev", "insecure-http", "allow-simulated", "sim-root", "accept-unpinned"}

func TestKubernetes(t *testing.T) {
	deps, svcs, pdbs := manifests(t)
	if len(deps) != 1 || len(svcs) != 1 || len(pdbs) != 1 {
		t.Fatalf("want one Deployment, Service and PodDisruptionBudget, got %d, %d, %d", len(deps), len(svcs), len(pdbs))
	}
	d := deps[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Fatalf("replicas %v, want 2 or more", d.Spec.Replicas)
	}
	pod := d.Spec.Template
	for k, v := range d.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Fatalf("selector %s=%s does not match the pod labels %v", k, v, pod.Labels)
		}
	}
	ps := pod.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Fatalf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", ps)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Fatal("the service needs no Kubernetes API token: automountServiceAccountToken: false")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || sc.Privileged != nil && *sc.Privileged {
		t.Fatalf("container securityContext %+v", sc)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Fatalf("no %s request", r)
		}
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Fatalf("no %s limit", r)
		}
	}

	// Arguments: serve, HTTPS on the probed port, every file under a mount.
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q: want serve first", c.Args)
	}
	f := flags(t, c.Args[1:])
	for _, u := range unsafe {
		if _, ok := f[u]; ok {
			t.Fatalf("--%s in a deployment", u)
		}
	}
	if len(c.Ports) != 1 || !strings.HasSuffix(f["listen"], ":"+strconv.Itoa(int(c.Ports[0].ContainerPort))) || strings.HasPrefix(f["listen"], "127.") {
		t.Fatalf("--listen %q vs container ports %+v", f["listen"], c.Ports)
	}
	port := c.Ports[0]
	for name, p := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Scheme != corev1.URISchemeHTTPS ||
			!(p.HTTPGet.Port == intstr.FromString(port.Name) || p.HTTPGet.Port == intstr.FromInt32(port.ContainerPort)) {
			t.Fatalf("probe for %s: %+v", name, p)
		}
	}

	// Which Secret (and key) each file flag reads.
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil {
			t.Fatalf("volume %s is not a Secret", v.Name)
		}
		vols[v.Name] = v.Secret
	}
	source := func(path string) (secret, key string) {
		for _, m := range c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, path)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			if !m.ReadOnly {
				t.Fatalf("mount %s is writable", m.MountPath)
			}
			s := vols[m.Name]
			if s == nil {
				t.Fatalf("mount %s names no Secret volume", m.MountPath)
			}
			if rel == "." {
				return s.SecretName, ""
			}
			for _, it := range s.Items {
				if it.Path == rel {
					return s.SecretName, it.Key
				}
			}
			if len(s.Items) > 0 {
				t.Fatalf("%s: Secret %s projects no %s", path, s.SecretName, rel)
			}
			return s.SecretName, rel
		}
		t.Fatalf("%s is not under a mounted Secret", path)
		return "", ""
	}
	want := map[string][2]string{
		"signing-key":   {"tdforge-verifier-keys", "signing-key.pem"},
		"nonce-secret":  {"tdforge-verifier-keys", "nonce-secret"},
		"reference-key": {"tdforge-verifier-keys", "publisher.pub"},
		"reference-dir": {"tdforge-verifier-references", ""},
		"tls-cert":      {"tdforge-verifier-tls", "tls.crt"},
		"tls-key":       {"tdforge-verifier-tls", "tls.key"},
	}
	for flag, w := range want {
		if f[flag] == "" {
			t.Fatalf("--%s missing from %q", flag, c.Args)
		}
		if s, k := source(f[flag]); s != w[0] || k != w[1] {
			t.Fatalf("--%s %s reads Secret %s key %q, want %s key %q", flag, f[flag], s, k, w[0], w[1])
		}
	}
	for name, s := range vols {
		if s.DefaultMode == nil || *s.DefaultMode&0o007 != 0 {
			t.Fatalf("Secret volume %s: defaultMode %v lets other users read it", name, s.DefaultMode)
		}
	}

	svc := svcs[0]
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Fatalf("Service selector %s=%s does not select the pods", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString(port.Name) || svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		t.Fatalf("Service ports %+v", svc.Spec.Ports)
	}
	if sel := pdbs[0].Spec.Selector; sel == nil || sel.MatchLabels["app.kubernetes.io/name"] != pod.Labels["app.kubernetes.io/name"] || pdbs[0].Spec.MinAvailable == nil {
		t.Fatalf("PodDisruptionBudget %+v", pdbs[0].Spec)
	}
}

// readUnit reads a systemd unit: its [Service] settings, continuation lines
// joined, repeated keys kept in order.
func readUnit(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(raw))
	var cont string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], strings.TrimSpace(v))
		}
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	u := readUnit(t, "systemd/tdforge-verifier.service")
	for k, v := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes",
	} {
		if got := u["Service."+k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	creds := map[string]string{}
	for _, lc := range u["Service.LoadCredential"] {
		name, path, ok := strings.Cut(lc, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			t.Fatalf("LoadCredential=%s: want NAME:/ABSOLUTE/PATH", lc)
		}
		creds[name] = path
	}
	exec := u["Service.ExecStart"]
	if len(exec) != 1 {
		t.Fatalf("ExecStart %q", exec)
	}
	args := strings.Fields(exec[0])
	if len(args) < 2 || filepath.Base(args[0]) != "verifier" || args[1] != "serve" {
		t.Fatalf("ExecStart %q: want verifier serve", exec[0])
	}
	f := flags(t, args[2:])
	for _, u := range unsafe {
		if _, ok := f[u]; ok {
			t.Fatalf("--%s in the unit", u)
		}
	}
	// Every secret is a credential, and the flag reads it from %d.
	for _, flag := range []string{"signing-key", "nonce-secret", "tls-key"} {
		name, ok := strings.CutPrefix(f[flag], "%d/")
		if !ok || creds[name] == "" {
			t.Errorf("--%s %q: want %%d/NAME of a LoadCredential=NAME:PATH (credentials: %v)", flag, f[flag], creds)
		}
	}
	for _, flag := range []string{"reference-dir", "reference-key", "tls-cert"} {
		if !strings.HasPrefix(f[flag], "/") {
			t.Errorf("--%s %q: want an absolute path", flag, f[flag])
		}
	}
}
