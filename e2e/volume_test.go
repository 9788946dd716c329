package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdforge/tdforge/internal/fsutil"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/imagedir"
)

// volumeDisk copies the dev image's disk (its volume region still all
// zeros or as a previous test left it) for one test's boots.
func volumeDisk(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "disk.raw")
	if out, err := exec.Command("cp", "--sparse=always", filepath.Join(devImage, imagedir.Disk), d).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return d
}

// readyState returns /readyz's "state" (the volume's state).
func (v *vm) readyState(t *testing.T) string {
	t.Helper()
	resp, err := insecureClient(20 * time.Second).Get(v.url("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r map[string]any
	json.NewDecoder(resp.Body).Decode(&r)
	s, _ := r["state"].(string)
	return s
}

// convBearer is the secret of the client that owns the tests'
// conversations (Authorization: Bearer); the host has none.
const convBearer = "e2e-conversation-owner-0123456789abcdefghij"

// createConversation saves a conversation holding content; it returns its
// id, or "" when the agent did not acknowledge it.
func (v *vm) createConversation(c *http.Client, content ...string) (string, error) {
	var msgs []map[string]string
	for _, m := range content {
		msgs = append(msgs, map[string]string{"role": "user", "content": m})
	}
	body, _ := json.Marshal(map[string]any{"title": "t", "model": "tiny", "messages": msgs})
	code, b, err := httpDo(c, convBearer, "POST", v.url("/v1/conversations"), string(body))
	if err != nil {
		return "", err
	}
	if code != http.StatusCreated {
		return "", fmt.Errorf("POST /v1/conversations: %d %s", code, b)
	}
	var s struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.ID == "" {
		return "", fmt.Errorf("POST /v1/conversations answered %s", b)
	}
	return s.ID, nil
}

// conversation returns GET /v1/conversations/{id}'s status and body.
func (v *vm) conversation(t *testing.T, id string) (int, string) {
	t.Helper()
	code, b, err := httpDo(insecureClient(30*time.Second), convBearer, "GET", v.url("/v1/conversations/"+id), "")
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b)
}

// TestSealedVolume boots one disk three times: the first boot creates the
// volume, saves a conversation holding a unique marker, then keeps saving
// while QEMU is killed; the second boot opens the volume and finds the
// marker and every acknowledged save; nowhere on the host (disk, consoles)
// is the marker in the clear; then a byte flipped in the volume's data
// area gives a reported error on the third boot, never wrong data.
func TestSealedVolume(t *testing.T) {
	disk := volumeDisk(t)
	var nonce [12]byte
	rand.Read(nonce[:])
	marker := "sealed-marker-" + hex.EncodeToString(nonce[:])

	// Boot 1: first boot formats; then the kill during writes.
	v := boot(t, devImage, bootOpts{disk: disk})
	if !v.consoleHas("initd: volume state: created and mounted", 60*time.Second) {
		t.Fatalf("first boot did not create the volume:\n%s", v.tail())
	}
	if st := v.readyState(t); st != "mounted" {
		t.Fatalf("/readyz state = %q, want mounted", st)
	}
	c := insecureClient(30 * time.Second)
	markID, err := v.createConversation(c, marker)
	if err != nil {
		t.Fatal(err)
	}
	// The host reaches the agent's port but has not the owner's secret:
	// 401; another client's secret lists nothing and reads nothing.
	for _, target := range []string{"/v1/conversations", "/v1/conversations/" + markID} {
		code, b, err := httpDo(c, "", "GET", v.url(target), "")
		if err != nil || code != http.StatusUnauthorized || bytes.Contains(b, []byte(marker)) {
			t.Fatalf("GET %s without the owner's bearer: %d %s %v", target, code, b, err)
		}
	}
	const otherBearer = "e2e-another-client-0123456789abcdefghijklm"
	if code, b, err := httpDo(c, otherBearer, "GET", v.url("/v1/conversations"), ""); err != nil || code != http.StatusOK || bytes.Contains(b, []byte(markID)) {
		t.Fatalf("another owner lists: %d %s %v", code, b, err)
	}
	if code, b, err := httpDo(c, otherBearer, "GET", v.url("/v1/conversations/"+markID), ""); err != nil || code != http.StatusNotFound || bytes.Contains(b, []byte(marker)) {
		t.Fatalf("another owner reads %s: %d %s %v", markID, code, b, err)
	}
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id, err := v.createConversation(c, fmt.Sprintf("crash-%d %s", i, strings.Repeat("x", 2000)))
			if err != nil {
				return // the VM died under the request
			}
			mu.Lock()
			acked = append(acked, id)
			mu.Unlock()
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 8 || time.Now().After(deadline) {
			break
		}
	}
	v.kill() // SIGKILL during writes
	close(stop)
	<-done
	v.stopped = true
	mu.Lock()
	saved := append([]string{markID}, acked...)
	mu.Unlock()
	if len(saved) < 3 {
		t.Fatalf("only %d saves acknowledged before the kill", len(saved))
	}
	consoles := []string{v.console}
	keep := func(p string) string {
		b, _ := os.ReadFile(p)
		q := filepath.Join(t.TempDir(), filepath.Base(p))
		os.WriteFile(q, b, 0o644)
		return q
	}
	consoles[0] = keep(v.console)

	// Boot 2: the existing volume opens; everything acknowledged is there.
	v = boot(t, devImage, bootOpts{disk: disk})
	if !v.consoleHas("initd: volume state: opened and mounted", 60*time.Second) {
		t.Fatalf("second boot did not open the volume:\n%s", v.tail())
	}
	if st := v.readyState(t); st != "mounted" {
		t.Fatalf("/readyz state after the crash = %q, want mounted", st)
	}
	for _, id := range saved {
		code, body := v.conversation(t, id)
		if code != http.StatusOK {
			t.Errorf("acknowledged conversation %s lost after the kill: %d %s", id, code, body)
		}
	}
	if _, body := v.conversation(t, markID); !strings.Contains(body, marker) {
		t.Fatalf("the marker did not survive the reboot: %s", body)
	}
	// A large conversation, so the data area holds long runs of its
	// blocks (the database and its WAL).
	filler := strings.Repeat("0123456789abcdef", 15<<10) // 240 KiB, under the per-message limit
	big := "big-" + marker + " " + filler
	bigMsgs := []string{big}
	for range 15 {
		bigMsgs = append(bigMsgs, filler)
	}
	before := snapshot(t, disk)
	bigID, err := v.createConversation(c, bigMsgs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
	consoles = append(consoles, keep(v.console))

	// Nothing of the conversations is on the host in the clear.
	for _, p := range append(consoles, disk) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("0123456789abcdef0123456789abcdef")) {
			t.Errorf("%s holds the conversation in the clear", p)
		}
	}
	for _, name := range []string{imagedir.Disk, imagedir.Initrd} {
		if b, _ := os.ReadFile(filepath.Join(devImage, name)); bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds the marker", name)
		}
	}

	// A tampered boot (changed kernel command line, so RTMR2 differs) gets
	// no key: the volume stays locked, with no history, and says why.
	cmdline, err := os.ReadFile(filepath.Join(devImage, imagedir.Cmdline))
	if err != nil {
		t.Fatal(err)
	}
	v = boot(t, devImage, bootOpts{disk: disk, cmdline: strings.TrimSpace(string(cmdline)) + " init_on_free=0"})
	if !v.consoleHas("initd: rtmr3 += volume-locked:state reason:broker refused: RTMR2 mismatch", 60*time.Second) {
		t.Fatalf("the tampered boot's volume was not locked and measured:\n%s", v.tail())
	}
	if st := v.readyState(t); st != "locked (broker refused: RTMR2 mismatch)" {
		t.Errorf("tampered /readyz state = %q", st)
	}
	if code, body := v.conversation(t, markID); code == http.StatusOK || strings.Contains(body, marker) || !strings.Contains(body, "locked") {
		t.Errorf("tampered boot served history: %d %s", code, body)
	}
	v.shutdown()

	// Flip one byte in the middle of each long run of volume blocks the
	// big conversation changed past the dm-integrity journal: its data
	// (the database file and the WAL's freed blocks).
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// (The locked boot wrote nothing: the region is as boot 2 left it.)
	for _, off := range changedRuns(t, disk, before) {
		var one [1]byte
		f.ReadAt(one[:], off)
		one[0] ^= 0x40
		f.WriteAt(one[:], off)
	}
	f.Close()

	v = boot(t, devImage, bootOpts{disk: disk})
	code, body := v.conversation(t, bigID)
	if code == http.StatusOK {
		if !strings.Contains(body, big[:64]) || !strings.Contains(body, filler) {
			t.Fatalf("the tampered volume returned wrong data (%d bytes)", len(body))
		}
		t.Fatal("the flipped bytes went unnoticed")
	}
	st := v.readyState(t)
	t.Logf("after the flip: GET %d %.200s; /readyz state %q", code, body, st)
	if !v.consoleHas("integrity", 10*time.Second) && !strings.Contains(st, "integrity") && !strings.Contains(body, "failed") {
		t.Errorf("the integrity error was not reported (console, /readyz or the API)")
	}
	v.shutdown()

	// Boots write their own copy of the disk: the built image is as built.
	info, err := imagedir.ReadInfo(devImage)
	if err != nil {
		t.Fatal(err)
	}
	if sum, _, err := fsutil.SHA256(filepath.Join(devImage, imagedir.Disk)); err != nil || sum != info.Artifacts[imagedir.Disk] {
		t.Errorf("the dev image's disk.raw changed since the build (%s, build.json %s, %v)", sum, info.Artifacts[imagedir.Disk], err)
	}
}

// snapshot copies the volume regions of disk.
func snapshot(t *testing.T, disk string) []byte {
	t.Helper()
	start, size := volumeRegion(t)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, start); err != nil {
		t.Fatal(err)
	}
	return b
}

func volumeRegion(t *testing.T) (int64, int64) {
	l, err := gptdisk.ReadLayout(filepath.Join(devImage, imagedir.Payloads))
	if err != nil || len(l.Volumes) != 1 {
		t.Fatalf("dev image volumes: %v %+v", err, l)
	}
	return int64(l.Volumes[0].StartLBA * 512), int64(l.Volumes[0].SizeBytes)
}

// changedRuns returns a disk offset in the middle of each run of at least
// 64 changed 4 KiB volume blocks past the first 8 MiB (the dm-integrity
// superblock and journal, about 1/128 of the volume, come first).
func changedRuns(t *testing.T, disk string, before []byte) []int64 {
	t.Helper()
	start, _ := volumeRegion(t)
	after := snapshot(t, disk)
	var offs []int64
	run := 0
	flush := func(end int) {
		if run >= 64 {
			offs = append(offs, start+int64(end-run*4096/2+100))
			t.Logf("flipping a byte in a run of %d changed blocks ending at volume offset %d", run, end)
		}
		run = 0
	}
	for i := 8 << 20; i+4096 <= len(after); i += 4096 {
		if !bytes.Equal(before[i:i+4096], after[i:i+4096]) {
			run++
		} else {
			flush(i)
		}
	}
	flush(len(after))
	if len(offs) == 0 {
		t.Fatal("the big conversation changed no long run of volume blocks")
	}
	return offs
}
