package devmapper

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestIoctlEncoding(t *testing.T) {
	if got := ioctlNum(cmdDevCreate); got != 0xc138fd03 {
		t.Errorf("DM_DEV_CREATE = %#x, want 0xc138fd03", got)
	}
	if got := ioctlNum(cmdTableLoad); got != 0xc138fd09 {
		t.Errorf("DM_TABLE_LOAD = %#x, want 0xc138fd09", got)
	}
	spec := targetSpec(Target{0, 80, "verity", "1 a b"})
	if len(spec)%8 != 0 || binary.LittleEndian.Uint32(spec[20:]) != uint32(len(spec)) || string(spec[24:30]) != "verity" || string(spec[40:45]) != "1 a b" || spec[45] != 0 {
		t.Errorf("bad target spec %x", spec)
	}
	h := header("payload-models", dmReadonlyFlag, 1, spec)
	le := binary.LittleEndian
	if le.Uint32(h[0:]) != 4 || le.Uint32(h[12:]) != uint32(len(h)) || le.Uint32(h[16:]) != dmIoctlSize ||
		le.Uint32(h[20:]) != 1 || le.Uint32(h[28:]) != dmReadonlyFlag || string(h[48:62]) != "payload-models" || h[62] != 0 ||
		!bytes.Equal(h[dmIoctlSize:dmIoctlSize+len(spec)], spec) {
		t.Error("bad dm_ioctl header")
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	for _, name := range []string{"", "a/b", "a b", string(make([]byte, dmNameLen))} {
		if _, err := Create(name, "", true, Target{0, 8, "zero", ""}); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := Create("x", "", true); err == nil {
		t.Error("empty table accepted")
	}
}

func TestParseMajMin(t *testing.T) {
	if _, err := ParseMajMin("10:236\n"); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"", "10", "a:b", "1:2:3"} {
		if _, err := ParseMajMin(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
