package powerbtn

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func ev(typ, code uint16, val int32) []byte {
	b := make([]byte, eventSize)
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], code)
	binary.LittleEndian.PutUint32(b[20:], uint32(val))
	return b
}

func TestPressed(t *testing.T) {
	var in bytes.Buffer
	in.Write(ev(evKey, 30, 1))       // KEY_A
	in.Write(ev(0, 0, 0))            // SYN
	in.Write(ev(evKey, keyPower, 0)) // release only
	in.Write(ev(evKey, keyPower, 1)) // press
	if err := Pressed(&in); err != nil {
		t.Fatal(err)
	}
	if in.Len() != 0 {
		t.Fatal("did not stop at the press")
	}
	if err := Pressed(bytes.NewReader(ev(evKey, keyPower, 0))); err != io.EOF {
		t.Fatalf("no press: %v", err)
	}
}

func TestFind(t *testing.T) {
	root := t.TempDir()
	for name, dev := range map[string]string{"event0": "AT Translated Set 2 keyboard", "event1": "Power Button", "input1": "Power Button"} {
		os.MkdirAll(filepath.Join(root, name, "device"), 0o755)
		os.WriteFile(filepath.Join(root, name, "device", "name"), []byte(dev+"\n"), 0o644)
	}
	got := Find(root, "/dev")
	if len(got) != 1 || got[0] != "/dev/input/event1" {
		t.Fatalf("Find = %v", got)
	}
	if err := Watch([]string{filepath.Join(root, "missing")}, func() {}); err == nil {
		t.Fatal("Watch with no device succeeded")
	}
}
