// Package volume opens initd's sealed volumes (docs/volume.md). A volume is
// an all-zero partition of the image's disk (GPT partition GUID = the
// policy's volume UUID) that initd stacks, with a key the key broker
// releases to the attested TD:
//
//	partition -> dm-integrity (J mode, HMAC-SHA256, 4096-byte blocks)
//	          -> dm-crypt (aes-xts-plain64, 4096-byte sectors) -> ext4
//
// mounted at the policy's mount point, owned by the volume's first user.
// Both keys (and dm-integrity's journal MAC key) are derived from the
// released 64-byte value with HKDF-SHA256. They live in TD memory only:
// Go slices, zeroed once the tables are loaded; the tables' params
// strings, which hold them in hex and, being Go strings, are not zeroed
// but left to the garbage collector; and the kernel. Never in a file or a
// log.
//
// A partition whose first block is all zeros is a first boot: initd has
// dm-integrity format it and creates the filesystem (Mkfs). Anything else
// is opened, never formatted: a wrong key (dm-integrity's superblock MAC,
// or a tag mismatch), a filesystem header that does not name the volume,
// or an integrity error leaves it unmounted with a reason (volstatus), and
// initd measures that reason into RTMR3 (event volume-locked or
// volume-failed). Reformatting is an operator's act (docs/volume.md).
package volume

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/hkdf"
	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/guest/blockdev"
	"github.com/tdforge/tdforge/internal/guest/devmapper"
	"github.com/tdforge/tdforge/internal/guest/volstatus"
	"github.com/tdforge/tdforge/internal/image/crypt"
	"github.com/tdforge/tdforge/internal/inputs/secret"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// KeySize is the size of the value the key broker releases for a volume:
// that of every key-broker resource, the HKDF input all of its keys are
// derived from (not itself a dm-crypt key: that is CryptKey's,
// crypt.KeySize bytes).
const KeySize = secret.KeySize

// HKDF info strings of the derived keys (the salt is the volume UUID).
const (
	InfoCrypt      = "tdforge/v1/volume dm-crypt aes-xts-plain64"
	InfoIntegrity  = "tdforge/v1/volume dm-integrity hmac(sha256)"
	InfoJournalMAC = "tdforge/v1/volume dm-integrity journal_mac hmac(sha256)"
)

// tagSize is the HMAC-SHA256 tag dm-integrity stores per block.
const tagSize = 32

// integrityMagic starts a dm-integrity superblock ("integrt\0").
var integrityMagic = []byte("integrt\x00")

// Keys are a volume's derived keys.
type Keys struct {
	// Crypt is the 64-byte secret from which CryptKey derives the
	// aes-xts-plain64 key, bound to the dm-integrity superblock's salt.
	Crypt      []byte
	Integrity  []byte // 32 bytes: dm-integrity internal_hash hmac(sha256)
	JournalMAC []byte // 32 bytes: dm-integrity journal_mac hmac(sha256)
	// Resource is the key-broker resource the value was released as (the
	// volume's key id; its dm-crypt layer is described as a payload's).
	Resource string
}

// DeriveKeys derives the volume's keys from the released value (KeySize
// bytes) with HKDF-SHA256, salted with the volume UUID.
func DeriveKeys(value []byte, uuid string) (Keys, error) {
	if len(value) != KeySize {
		return Keys{}, fmt.Errorf("the broker released %d bytes; a volume key is %d", len(value), KeySize)
	}
	k := Keys{Crypt: make([]byte, 64), Integrity: make([]byte, 32), JournalMAC: make([]byte, 32)}
	for _, d := range []struct {
		info string
		out  []byte
	}{{InfoCrypt, k.Crypt}, {InfoIntegrity, k.Integrity}, {InfoJournalMAC, k.JournalMAC}} {
		if _, err := io.ReadFull(hkdf.New(sha256.New, value, []byte(uuid), []byte(d.info)), d.out); err != nil {
			return Keys{}, err
		}
	}
	return k, nil
}

// Clear zeroes the keys.
func (k Keys) Clear() {
	clear(k.Crypt)
	clear(k.Integrity)
	clear(k.JournalMAC)
}

// IntegrityTable is the dm-integrity target over device (major:minor) for
// length sectors: journal mode (crash safe), 4096-byte blocks, keyed
// HMAC-SHA256 tags, journal MAC, and fix_hmac (the superblock is MACed and
// a per-volume salt is mixed into every tag, so blocks cannot move between
// volumes or sections). The params hold the keys.
func IntegrityTable(device string, length uint64, k Keys) devmapper.Target {
	opts := []string{
		fmt.Sprintf("block_size:%d", BlockSize),
		"internal_hash:hmac(sha256):" + hex.EncodeToString(k.Integrity),
		"journal_mac:hmac(sha256):" + hex.EncodeToString(k.JournalMAC),
		"fix_hmac",
	}
	return devmapper.Target{Length: length, Type: "integrity",
		Params: fmt.Sprintf("%s 0 %d J %d %s", device, tagSize, len(opts), strings.Join(opts, " "))}
}

// CryptKey derives the 64-byte aes-xts-plain64 key (AES-256) from
// k.Crypt and the dm-integrity superblock's random salt (fix_hmac), so a
// volume re-created over the same region (after its header was zeroed)
// encrypts under a new key: its ciphertext cannot be compared with the
// old one's. The salt is covered by the superblock MAC.
func CryptKey(k Keys, salt []byte) ([]byte, error) {
	key := make([]byte, crypt.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, k.Crypt, salt, []byte(InfoCrypt)), key); err != nil {
		return nil, err
	}
	return key, nil
}

// CryptTable is the dm-crypt target with key (CryptKey's) over the
// integrity device for length sectors: the encrypted payloads' format
// (crypt.Table: aes-xts-plain64, crypt.SectorSize-byte sectors,
// iv_large_sectors).
func CryptTable(resource, device string, length uint64, key []byte) (devmapper.Target, error) {
	n, params, err := crypt.Table(crypt.Params(resource), key, device, length*512)
	if err != nil {
		return devmapper.Target{}, err
	}
	return devmapper.Target{Length: n, Type: "crypt", Params: params}, nil
}

// Map stacks volume name's dm-integrity and dm-crypt devices on partition
// part with keys and returns the plaintext device and its size in
// sectors. A one-block mapping comes first: on an all-zero region the
// kernel formats the dm-integrity superblock and journal; on an existing
// one it checks the superblock MAC (the key) and replays the journal.
// Then the superblock says how many sectors the volume provides. On error
// nothing stays mapped.
func Map(name, uuid, part string, keys Keys) (string, uint64, error) {
	partDev, err := devmapper.DevNum(part)
	if err != nil {
		return "", 0, err
	}
	iname := integrityName(name)
	if _, err := devmapper.Create(iname, "", false, IntegrityTable(partDev, BlockSize/512, keys)); err != nil {
		return "", 0, fmt.Errorf("dm-integrity refused the volume's header (wrong key or tampered superblock): %v", err)
	}
	provided, salt, err := superblock(part, keys.JournalMAC)
	devmapper.Remove(iname)
	if err != nil {
		return "", 0, err
	}
	key, err := CryptKey(keys, salt)
	if err != nil {
		return "", 0, err
	}
	defer clear(key)
	inode, err := devmapper.Create(iname, "TDFORGE-VOL-INTEGRITY-"+uuid, false, IntegrityTable(partDev, provided, keys))
	if err != nil {
		return "", 0, fmt.Errorf("dm-integrity: %v", err)
	}
	idev, err := devmapper.DevNum(inode)
	if err != nil {
		devmapper.Remove(iname)
		return "", 0, err
	}
	ct, err := CryptTable(keys.Resource, idev, provided, key)
	if err != nil {
		devmapper.Remove(iname)
		return "", 0, err
	}
	cnode, err := devmapper.Create(cryptName(name), "TDFORGE-VOL-"+uuid, false, ct)
	if err != nil {
		devmapper.Remove(iname)
		return "", 0, fmt.Errorf("dm-crypt: %v", err)
	}
	return cnode, provided, nil
}

// Device-mapper names of volume name's layers.
func integrityName(name string) string { return "vol-" + name + "-integrity" }
func cryptName(name string) string     { return "vol-" + name }

// Opener opens sealed volumes.
type Opener struct {
	// Fetch obtains a resource from the key broker; its error is the short
	// reason (initd/unlock.Unlocker.Fetch with the runtime log).
	Fetch func(ctx context.Context, resource string) ([]byte, error)
	// Owner returns the uid and gid of service user.
	Owner func(user string) (uid, gid int, ok bool)
	// StatusDir receives the status files (volstatus.Dir).
	StatusDir string
	// Logf receives progress lines (never key material).
	Logf func(format string, a ...any)
	// Devices is where disks are found (the zero Tree: the kernel's).
	Devices blockdev.Tree
}

// Result is the outcome of opening one volume.
type Result struct {
	Status volstatus.Status
}

// Open opens (or, on first boot, creates) volume v and mounts it, then
// writes its status file. A volume that does not open is left unmapped
// and unmounted; the Result says why. The only error is a status file
// that could not be written.
func (o *Opener) Open(ctx context.Context, v policy.Volume) (Result, error) {
	res := o.open(ctx, v)
	if res.Status.State != volstatus.Mounted {
		devmapper.Remove(cryptName(v.Name))
		devmapper.Remove(integrityName(v.Name))
	}
	if err := volstatus.Write(o.StatusDir, v.Name, res.Status); err != nil {
		return res, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	return res, nil
}

func locked(reason string) Result {
	return Result{Status: volstatus.Status{State: volstatus.Locked, Reason: reason}}
}

func failed(format string, a ...any) Result {
	return Result{Status: volstatus.Status{State: volstatus.Failed, Reason: fmt.Sprintf(format, a...)}}
}

func (o *Opener) open(ctx context.Context, v policy.Volume) Result {
	part, err := o.findPartition(v)
	if err != nil {
		return failed("%v", err)
	}
	value, err := o.Fetch(ctx, v.Key)
	if err != nil {
		return locked(err.Error())
	}
	keys, err := DeriveKeys(value, v.UUID)
	keys.Resource = v.Key
	clear(value)
	if err != nil {
		return failed("%v", err)
	}
	defer keys.Clear()

	head, err := readHead(part)
	if err != nil {
		return failed("reading the volume's header: %v", err)
	}
	first := bytes.Equal(head, make([]byte, len(head)))
	if !first && !bytes.HasPrefix(head, integrityMagic) {
		return failed("the partition holds neither a fresh (all-zero) region nor a dm-integrity header; not formatting it (docs/volume.md: reformatting)")
	}
	cnode, provided, err := Map(v.Name, v.UUID, part, keys)
	if err != nil {
		return failed("%v", err)
	}
	keys.Clear()
	if first {
		o.logf("volume %s: first boot: creating ext4 on %s (%d MiB)", v.Name, cnode, provided*512>>20)
		f, err := os.OpenFile(cnode, os.O_RDWR, 0)
		if err != nil {
			return failed("%v", err)
		}
		err = Mkfs(f, int64(provided*512), v.UUID, v.Name)
		f.Close()
		if err != nil {
			return failed("%v", err)
		}
	} else if err := checkHeader(cnode, v); err != nil {
		return failed("%v", err)
	}
	if err := os.MkdirAll(v.Mount, 0o755); err != nil {
		return failed("%v", err)
	}
	if err := unix.Mount(cnode, v.Mount, "ext4", unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC, "data=ordered,errors=remount-ro"); err != nil {
		return failed("mounting ext4: %v", err)
	}
	if err := o.own(v); err != nil {
		unix.Unmount(v.Mount, 0)
		return failed("%v", err)
	}
	if first {
		o.logf("volume %s: created and mounted at %s", v.Name, v.Mount)
	} else {
		o.logf("volume %s: opened and mounted at %s", v.Name, v.Mount)
	}
	return Result{Status: volstatus.Status{State: volstatus.Mounted}}
}

// own gives the mount's root directory to the volume's first user (mode
// 0700): the one service that writes it.
func (o *Opener) own(v policy.Volume) error {
	if o.Owner == nil || len(v.Users) == 0 {
		return nil
	}
	uid, gid, ok := o.Owner(v.Users[0])
	if !ok {
		return fmt.Errorf("volume user %q is not a service", v.Users[0])
	}
	if err := os.Chown(v.Mount, uid, gid); err != nil {
		return err
	}
	return os.Chmod(v.Mount, 0o700)
}

func (o *Opener) logf(format string, a ...any) {
	if o.Logf != nil {
		o.Logf(format, a...)
	}
}

// readHead reads the partition's first block, bypassing the page cache.
func readHead(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	b := make([]byte, BlockSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// superblock reads provided_data_sectors (le64 at offset 16) and the
// fix_hmac salt (16 bytes at offset 48) from the dm-integrity superblock
// on dev, which the kernel has just checked (its MAC covers both).
func superblock(dev string, macKey []byte) (uint64, []byte, error) {
	b, err := readHead(dev)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the dm-integrity superblock: %v", err)
	}
	return parseSuperblock(b, macKey)
}

// parseSuperblock checks the dm-integrity superblock b (its first sector)
// and returns the sectors it provides and its salt. The kernel checked the
// superblock's MAC on its own read; initd read it again, so it checks the
// MAC on these bytes too (journal_mac with fix_hmac: HMAC-SHA256 of the
// sector's first 480 bytes, stored in its last 32): otherwise the host
// could answer this read with another volume's salt.
func parseSuperblock(b, macKey []byte) (uint64, []byte, error) {
	if len(b) < 512 || !bytes.HasPrefix(b, integrityMagic) {
		return 0, nil, errors.New("dm-integrity wrote no superblock")
	}
	m := hmac.New(sha256.New, macKey)
	m.Write(b[:512-sha256.Size])
	if !hmac.Equal(m.Sum(nil), b[512-sha256.Size:512]) {
		return 0, nil, errors.New("the dm-integrity superblock read back does not carry the volume key's MAC (it changed after the kernel checked it)")
	}
	n := binary.LittleEndian.Uint64(b[16:])
	n -= n % (BlockSize / 512)
	if n == 0 {
		return 0, nil, errors.New("the dm-integrity superblock provides no sectors")
	}
	salt := bytes.Clone(b[48:64])
	if bytes.Equal(salt, make([]byte, 16)) {
		return 0, nil, errors.New("the dm-integrity superblock has no salt (not created with fix_hmac)")
	}
	return n, salt, nil
}

// ext4 superblock fields (at byte 1024 of the filesystem).
const (
	ext4SB        = 1024
	ext4Magic     = 0x38 // le16 0xEF53
	ext4UUID      = 0x68 // 16 bytes
	ext4Label     = 0x78 // 16 bytes
	ext4MagicWord = 0xEF53
)

// checkHeader reads the filesystem header through the whole stack (so a
// wrong key or a tampered block is an integrity error) and checks that it
// names this volume: ext4 with the volume's UUID and name as its label.
func checkHeader(dev string, v policy.Volume) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, BlockSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		if errors.Is(err, unix.EILSEQ) || errors.Is(err, unix.EIO) {
			return fmt.Errorf("integrity error reading the filesystem header (wrong key or tampered data): %v", err)
		}
		return fmt.Errorf("reading the filesystem header: %v", err)
	}
	sb := b[ext4SB:]
	if binary.LittleEndian.Uint16(sb[ext4Magic:]) != ext4MagicWord {
		return errors.New("header mismatch: the volume holds no ext4 filesystem")
	}
	id := sb[ext4UUID : ext4UUID+16]
	got := fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
	label := strings.TrimRight(string(sb[ext4Label:ext4Label+16]), "\x00")
	if got != v.UUID || label != v.Name {
		return fmt.Errorf("header mismatch: the filesystem is %s %q, the policy's volume is %s %q", got, label, v.UUID, v.Name)
	}
	return nil
}

// findPartition returns the device node of the partition whose GPT
// partition GUID is v.UUID, of the tdforge volume type and v's size, on
// any disk (disks and nodes come from blockdev). None, or more than one,
// is an error.
func (o *Opener) findPartition(v policy.Volume) (string, error) {
	disks, err := o.Devices.Disks()
	if err != nil {
		return "", err
	}
	var found []string
	for _, d := range disks {
		t, err := d.GPT()
		if err != nil {
			continue
		}
		for _, p := range t.Partitions {
			if p.GUID != v.UUID {
				continue
			}
			size := (p.LastLBA - p.FirstLBA + 1) * uint64(d.SectorSize)
			if p.TypeGUID != policy.VolumeTypeGUID || size != v.SizeBytes {
				return "", fmt.Errorf("partition %d of %s has the volume's GUID %s but type %s and %d bytes; want type %s and %d bytes", p.Index, d.Name, v.UUID, p.TypeGUID, size, policy.VolumeTypeGUID, v.SizeBytes)
			}
			pn, err := o.Devices.PartitionNode(d.Name, p.Index)
			if err != nil {
				return "", err
			}
			found = append(found, pn)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no partition with GPT GUID %s on any disk (is the image's disk attached?)", v.UUID)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("partitions %v all carry the volume's GUID %s; refusing to guess", found, v.UUID)
}

// Close removes volume name's mappings after its filesystem is unmounted:
// removing the dm-integrity device writes its journal to the data area,
// so a cleanly shut down volume needs no journal replay.
func Close(name string) error {
	err1 := devmapper.Remove(cryptName(name))
	err2 := devmapper.Remove(integrityName(name))
	return errors.Join(err1, err2)
}

// Blocking lists, as "NAME state (reason)", the volumes in down (name ->
// state) that service uses: such a service stays down. The agent is never
// blocked (agentService): it serves without its volume and reports why.
func Blocking(p *policy.Policy, service, agentService string, down map[string]string) []string {
	if service == agentService {
		return nil
	}
	var out []string
	for _, v := range p.Volumes {
		if why, ok := down[v.Name]; ok && v.HasUser(service) {
			out = append(out, v.Name+" "+why)
		}
	}
	return out
}
