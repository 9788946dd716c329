package volume

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// TestMkfs: Mkfs on a fresh device gives an ext4 with a journal, the
// volume's UUID and label, that e2fsck finds clean, and reads no block it
// has not written (the device here fails such reads, as dm-integrity does).
func TestMkfs(t *testing.T) {
	e2fsck, err := exec.LookPath("e2fsck")
	if err != nil {
		t.Skip("e2fsck not installed (e2fsprogs)")
	}
	const size = 480 << 20
	img := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// Fill with garbage so that a read of an unwritten block, or a
	// block the filesystem assumes zero, shows.
	junk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for off := int64(0); off < size; off += int64(len(junk)) {
		if _, err := f.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := Mkfs(f, size, "0b9f3c1e-5a2d-8e4f-9a7b-112233445566", "state"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	dump, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, dump)
	}
	for _, want := range []string{"Filesystem UUID:          0b9f3c1e-5a2d-8e4f-9a7b-112233445566", "Filesystem volume name:   state", "has_journal", "Block size:               4096"} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("dumpe2fs lacks %q:\n%s", want, dump)
		}
	}
}

func TestDeriveKeys(t *testing.T) {
	value := bytes.Repeat([]byte{7}, KeySize)
	const id = "0b9f3c1e-5a2d-8e4f-9a7b-112233445566"
	k, err := DeriveKeys(value, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Crypt) != 64 || len(k.Integrity) != 32 || len(k.JournalMAC) != 32 {
		t.Fatalf("key sizes %d %d %d", len(k.Crypt), len(k.Integrity), len(k.JournalMAC))
	}
	if bytes.Equal(k.Crypt[:32], k.Integrity) || bytes.Equal(k.Integrity, k.JournalMAC) || bytes.Contains(k.Crypt, value[:16]) {
		t.Error("derived keys are not distinct from each other and the value")
	}
	again, _ := DeriveKeys(value, id)
	other, _ := DeriveKeys(value, "0b9f3c1e-5a2d-8e4f-9a7b-112233445567")
	if !bytes.Equal(again.Crypt, k.Crypt) || bytes.Equal(other.Crypt, k.Crypt) {
		t.Error("keys must depend on exactly the value and the volume UUID")
	}
	k.Clear()
	if !bytes.Equal(k.Crypt, make([]byte, 64)) {
		t.Error("Clear left key bytes")
	}
	if _, err := DeriveKeys(value[:32], id); err == nil || !strings.Contains(err.Error(), "64") {
		t.Errorf("short value: %v", err)
	}
}

func TestTables(t *testing.T) {
	k, _ := DeriveKeys(bytes.Repeat([]byte{1}, KeySize), "0b9f3c1e-5a2d-8e4f-9a7b-112233445566")
	it := IntegrityTable("253:3", 8, k)
	want := "253:3 0 32 J 4 block_size:4096 internal_hash:hmac(sha256):"
	if it.Type != "integrity" || it.Length != 8 || !strings.HasPrefix(it.Params, want) || !strings.HasSuffix(it.Params, " fix_hmac") {
		t.Errorf("integrity table %+v", it)
	}
	key, err := CryptKey(k, bytes.Repeat([]byte{9}, 16))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := CryptKey(k, bytes.Repeat([]byte{8}, 16))
	if len(key) != 64 || bytes.Equal(key, other) || bytes.Equal(key, k.Crypt) {
		t.Error("the dm-crypt key must be 64 bytes bound to the superblock salt")
	}
	ct, err := CryptTable("tdforge/dev/state", "253:4", 1024, key)
	if err != nil || ct.Length != 1024 || ct.Type != "crypt" || !strings.HasPrefix(ct.Params, "aes-xts-plain64 ") || !strings.HasSuffix(ct.Params, " 0 253:4 0 2 sector_size:4096 iv_large_sectors") {
		t.Errorf("crypt table %+v", ct)
	}
}

// checkHeader accepts the filesystem Mkfs made for the volume and refuses
// another volume's (header mismatch).
func TestCheckHeader(t *testing.T) {
	img := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 << 20) // policy.MinVolumeSize
	if err := Mkfs(f, 16<<20, "0b9f3c1e-5a2d-8e4f-9a7b-112233445566", "state"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v := policy.Volume{Name: "state", UUID: "0b9f3c1e-5a2d-8e4f-9a7b-112233445566"}
	if err := checkHeader(img, v); err != nil {
		t.Fatal(err)
	}
	v.UUID = "0b9f3c1e-5a2d-8e4f-9a7b-000000000000"
	if err := checkHeader(img, v); err == nil || !strings.Contains(err.Error(), "header mismatch") {
		t.Errorf("another volume's header: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.img")
	os.WriteFile(empty, make([]byte, 8192), 0o600)
	if err := checkHeader(empty, v); err == nil || !strings.Contains(err.Error(), "no ext4") {
		t.Errorf("no filesystem: %v", err)
	}
}

// A closed volume keeps its users down, except the agent.
func TestBlocking(t *testing.T) {
	p := &policy.Policy{Volumes: []policy.Volume{
		{Name: "state", Users: []string{"agent", "indexer"}},
		{Name: "cache", Users: []string{"web"}},
	}}
	down := map[string]string{"state": "locked (broker refused: RTMR2 mismatch)"}
	if got := Blocking(p, "indexer", "agent", down); len(got) != 1 || got[0] != "state locked (broker refused: RTMR2 mismatch)" {
		t.Errorf("indexer: %v", got)
	}
	if got := Blocking(p, "agent", "agent", down); got != nil {
		t.Errorf("the agent must start: %v", got)
	}
	if got := Blocking(p, "web", "agent", down); got != nil {
		t.Errorf("web uses an open volume: %v", got)
	}
}

// initd checks the MAC of the superblock bytes it reads: a host that
// answers initd's read with another volume's salt is refused. Before,
// the salt was taken unchecked.
func TestSuperblockMAC(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	sb := make([]byte, 512)
	copy(sb, integrityMagic)
	binary.LittleEndian.PutUint64(sb[16:], 4096)
	copy(sb[48:64], bytes.Repeat([]byte{0xa5}, 16))
	m := hmac.New(sha256.New, key)
	m.Write(sb[:480])
	copy(sb[480:], m.Sum(nil))
	n, salt, err := parseSuperblock(sb, key)
	if err != nil || n != 4096 || salt[0] != 0xa5 {
		t.Fatalf("a genuine superblock: %d %x %v", n, salt, err)
	}
	forged := bytes.Clone(sb)
	forged[48] ^= 1
	if _, _, err := parseSuperblock(forged, key); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("a superblock with another salt accepted: %v", err)
	}
	if _, _, err := parseSuperblock(sb, bytes.Repeat([]byte{8}, 32)); err == nil {
		t.Fatal("a superblock under another key accepted")
	}
}
