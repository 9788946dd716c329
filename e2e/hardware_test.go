package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/refvalues"
)

// checkOf returns the named check of a verifier report.
func checkOf(r *verifierResult, name string) (status, reason string) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

// wantCheck fails the test unless check name has status st and a reason
// containing reason.
func wantCheck(t *testing.T, r *verifierResult, out, name, st, reason string) {
	t.Helper()
	if s, why := checkOf(r, name); s != st || !strings.Contains(why, reason) {
		t.Fatalf("check %q = %s %q, want %s containing %q\n%s", name, s, why, st, reason, out)
	}
}

// tool runs a built binary (builder or verifier) and fails on a non-zero
// exit.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestHardwareProfileRehearsal runs the code paths that only real TDX would
// otherwise reach (issue 12): the dev image is verified against a reference
// that treats it like a real platform, whose RTMR0 the builder cannot
// predict (null, ACPI and boot-variable digests not pinned). Unaccepted it
// is NOT TRUSTED; accepted it is TRUSTED with RTMR0 NOT PINNED; then RTMR0
// is recorded from the running TD, merged as an accepted value, signed and
// verified with the key, which names the member; a tampered member is NOT
// TRUSTED.
func TestHardwareProfileRehearsal(t *testing.T) {
	v := boot(t, devImage, bootOpts{})
	dir := t.TempDir()
	doc, err := refvalues.ReadFile(filepath.Join(devImage, "reference-values.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc.Registers.RTMR0 = nil
	doc.Reasons = map[string]string{"rtmr0": "rehearsal: this platform's ACPI tables and boot variables cannot be predicted"}
	unknown := 0
	for i, e := range doc.Events["rtmr0"] {
		if e.Component == "acpi" || e.Component == "boot-variables" {
			doc.Events["rtmr0"][i].Digest = refvalues.NotPinned
			unknown++
		}
	}
	if unknown != 5 {
		t.Fatalf("%d ACPI and boot-variable events in the dev reference, want 5", unknown)
	}
	write := func(name string, d *refvalues.Document) string {
		b, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ref := write("ref.json", doc)

	// Unpinned RTMR0: NOT TRUSTED by default; the honest CCEL still
	// matches every known event.
	r, code, out := v.attest(t, ref)
	if code != 1 || r.Trusted {
		t.Fatalf("unpinned RTMR0 trusted (exit %d):\n%s", code, out)
	}
	wantCheck(t, r, out, "RTMR0", "FAIL", "NOT PINNED")
	wantCheck(t, r, out, "events RTMR0", "PASS", "5 not pinned")

	// Accepted: TRUSTED, the RTMR0 line says what goes unchecked.
	ev := filepath.Join(dir, "evidence.json")
	r, code, out = v.attest(t, ref, "--accept-unpinned", "rtmr0", "--save", ev)
	if code != 0 || !r.Trusted {
		t.Fatalf("accepted unpinned RTMR0 not trusted (exit %d):\n%s", code, out)
	}
	wantCheck(t, r, out, "RTMR0", "SKIPPED", "NOT PINNED, accepted by the options: ACPI tables, TD HOB and boot variables unchecked")
	if !strings.Contains(out, `"accepted_unpinned"`) {
		t.Fatalf("JSON report lacks accepted_unpinned:\n%s", out)
	}

	// Record RTMR0 from the running TD, merge it as an accepted value, sign.
	rec := filepath.Join(dir, "recorded.json")
	tool(t, "verifier", "record", "--evidence", ev, "--dev", "--simulated", "--allow-simulated", "--sim-root", v.simRoot, "-o", rec)
	merged := filepath.Join(dir, "merged.json")
	tool(t, "verifier", "reference", "merge", "--reference", ref, "--recorded", rec, "--shape", "tcg-2G-2cpu", "-o", merged)
	key := filepath.Join(dir, "signing")
	tool(t, "builder", "sign", "--generate-key", "ecdsa-p256", "-o", key)
	signed := filepath.Join(dir, "merged.json.dsse")
	tool(t, "builder", "sign", "--key", key+".key", "-o", signed, merged)

	r, code, out = v.attest(t, signed, "--reference-key", key+".pub")
	if code != 0 || !r.Trusted {
		t.Fatalf("recorded RTMR0 not trusted (exit %d):\n%s", code, out)
	}
	wantCheck(t, r, out, "reference values signature", "PASS", "signed by")
	wantCheck(t, r, out, "RTMR0", "PASS", "RTMR0 matches accepted value 'tcg-2G-2cpu'")
	wantCheck(t, r, out, "events RTMR0", "PASS", "13 events match")
	// The signed reference without its key is a usage error.
	cmd := exec.Command(filepath.Join(binDir, "verifier"), "attest", "--reference", signed, "--allow-simulated",
		"--sim-root", v.simRoot, v.url(""))
	if b, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(b), "--reference-key") {
		t.Fatalf("signed reference without key: %v\n%s", err, b)
	}

	// A tampered member (another value, signed again): NOT TRUSTED.
	bad, err := refvalues.ReadFile(merged)
	if err != nil {
		t.Fatal(err)
	}
	val := []byte(bad.Accepted.RTMR0[0].Value)
	if val[60] == '0' {
		val[60] = '1'
	} else {
		val[60] = '0'
	}
	bad.Accepted.RTMR0[0].Value = string(val)
	badSigned := filepath.Join(dir, "bad.json.dsse")
	tool(t, "builder", "sign", "--key", key+".key", "-o", badSigned, write("bad.json", bad))
	r, code, out = v.attest(t, badSigned, "--reference-key", key+".pub")
	if code != 1 || r.Trusted {
		t.Fatalf("tampered accepted value trusted (exit %d):\n%s", code, out)
	}
	wantCheck(t, r, out, "RTMR0", "FAIL", "none of the 1 accepted values")
}
