// Package powerbtn turns the ACPI power button (QEMU system_powerdown, a
// cloud provider's "shut down") into a clean initd poweroff. It needs the
// kernel's button and evdev modules: the button driver registers an input
// device named "Power Button" whose KEY_POWER presses are read from
// /dev/input/eventN.
package powerbtn

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
)

const (
	evKey    = 0x01
	keyPower = 116
	// struct input_event on 64-bit: timeval (16) + type u16 + code u16 + value s32.
	eventSize = 24
)

// Find returns the event device nodes of every "Power Button" input device
// listed under sysClassInput (normally /sys/class/input), mapped into devDir.
func Find(sysClassInput, devDir string) []string {
	ents, _ := os.ReadDir(sysClassInput)
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "event") {
			continue
		}
		name, err := os.ReadFile(filepath.Join(sysClassInput, e.Name(), "device", "name"))
		if err == nil && strings.TrimSpace(string(name)) == "Power Button" {
			out = append(out, filepath.Join(devDir, "input", e.Name()))
		}
	}
	return out
}

// Pressed reads input events from r until a KEY_POWER press arrives.
func Pressed(r io.Reader) error {
	buf := make([]byte, eventSize)
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		typ := binary.LittleEndian.Uint16(buf[16:])
		code := binary.LittleEndian.Uint16(buf[18:])
		val := int32(binary.LittleEndian.Uint32(buf[20:]))
		if typ == evKey && code == keyPower && val == 1 {
			return nil
		}
	}
}

// Watch calls onPress once when any of the devices reports a press. It
// returns an error if no device can be opened.
func Watch(devices []string, onPress func()) error {
	opened := 0
	for _, d := range devices {
		f, err := os.Open(d)
		if err != nil {
			continue
		}
		opened++
		go func() {
			defer f.Close()
			if Pressed(f) == nil {
				onPress()
			}
		}()
	}
	if opened == 0 {
		return errors.New("no ACPI power button input device (add the button and evdev modules to the policy)")
	}
	return nil
}
