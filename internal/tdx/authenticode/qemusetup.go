package authenticode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// QEMUBoot describes a QEMU x86 direct kernel boot (-kernel/-initrd/-append)
// as far as it changes the kernel's setup header.
type QEMUBoot struct {
	// BelowFourG is the guest RAM below 4 GiB in bytes (see BelowFourG).
	BelowFourG uint64
	// InitrdSize is the initrd size in bytes; 0 means no initrd.
	InitrdSize uint64
	// Cmdline is the -append string (only "vga=" matters here).
	Cmdline string
}

// acpiDataSize is QEMU's reserve at the top of low RAM for ACPI and other
// firmware data (pcmc->acpi_data_size: 128 KiB tables + 32 KiB).
const acpiDataSize = 0x20000 + 0x8000

// BelowFourG returns the RAM QEMU's q35 machine maps below 4 GiB for a
// memory size: all of it under 2.75 GiB, else 2 GiB.
func BelowFourG(memBytes uint64) uint64 {
	if memBytes >= 0xb0000000 {
		return 0x80000000
	}
	return memBytes
}

// PatchQEMUSetupHeader returns a copy of the bzImage with the setup-header
// fields QEMU's x86 loader (before 10.2) writes: type_of_loader, loadflags
// CAN_USE_HEAP, heap_end_ptr, cmd_line_ptr, vid_mode for "vga=", and
// ramdisk_image/ramdisk_size when there is an initrd. OVMF reassembles the
// kernel from fw_cfg and measures this patched image.
func PatchQEMUSetupHeader(kernel []byte, b QEMUBoot) ([]byte, error) {
	if len(kernel) < 0x240 {
		return nil, fmt.Errorf("kernel: %d bytes is too small for a Linux setup header", len(kernel))
	}
	k := append([]byte(nil), kernel...)
	if binary.LittleEndian.Uint32(k[0x202:]) != 0x53726448 { // "HdrS"
		return nil, errors.New("kernel: no Linux boot protocol header (HdrS); QEMU would not treat it as a bzImage")
	}
	protocol := binary.LittleEndian.Uint16(k[0x206:])
	if protocol < 0x202 || k[0x211]&0x01 == 0 {
		return nil, fmt.Errorf("kernel: boot protocol %#x or a low (non-bzImage) kernel is not supported", protocol)
	}
	if b.BelowFourG <= acpiDataSize {
		return nil, fmt.Errorf("kernel: guest RAM below 4 GiB (%d bytes) is too small", b.BelowFourG)
	}
	const realAddr, cmdlineAddr = 0x10000, 0x20000
	var initrdMax uint64
	switch {
	case protocol >= 0x20c && binary.LittleEndian.Uint16(k[0x236:])&0x2 != 0: // XLF_CAN_BE_LOADED_ABOVE_4G
		initrdMax = 0xffffffff
	case protocol >= 0x203:
		initrdMax = uint64(binary.LittleEndian.Uint32(k[0x22c:]))
	default:
		initrdMax = 0x37ffffff
	}
	if initrdMax >= b.BelowFourG-acpiDataSize {
		initrdMax = b.BelowFourG - acpiDataSize - 1
	}
	binary.LittleEndian.PutUint32(k[0x228:], cmdlineAddr)
	if i := strings.Index(b.Cmdline, "vga="); i >= 0 {
		mode, err := vgaMode(b.Cmdline[i+4:])
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint16(k[0x1fa:], mode)
	}
	k[0x210] = 0xb0
	k[0x211] |= 0x80
	binary.LittleEndian.PutUint16(k[0x224:], cmdlineAddr-realAddr-0x200)
	if b.InitrdSize > 0 {
		if b.InitrdSize >= initrdMax {
			return nil, fmt.Errorf("initrd: %d bytes does not fit below %#x; QEMU refuses it (give the VM more memory)", b.InitrdSize, initrdMax)
		}
		addr := (initrdMax - b.InitrdSize) &^ 4095
		binary.LittleEndian.PutUint32(k[0x218:], uint32(addr))
		binary.LittleEndian.PutUint32(k[0x21c:], uint32(b.InitrdSize))
	}
	return k, nil
}

// vgaMode parses the value of QEMU's "vga=" handling.
func vgaMode(s string) (uint16, error) {
	switch {
	case strings.HasPrefix(s, "normal"):
		return 0xffff, nil
	case strings.HasPrefix(s, "ext"):
		return 0xfffe, nil
	case strings.HasPrefix(s, "ask"):
		return 0xfffd, nil
	}
	if i := strings.IndexByte(s, ' '); i >= 0 {
		s = s[:i]
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("cmdline: invalid vga= value %q (QEMU refuses it)", s)
	}
	return uint16(v), nil
}

// CmdlineLimit returns the kernel's cmdline_size (setup header 0x238,
// protocol >= 2.06) excluding the NUL, or 255 for older kernels.
func CmdlineLimit(kernel []byte) (int, error) {
	if len(kernel) < 0x240 || binary.LittleEndian.Uint32(kernel[0x202:]) != 0x53726448 {
		return 0, errors.New("kernel: no Linux boot protocol header (HdrS)")
	}
	if binary.LittleEndian.Uint16(kernel[0x206:]) < 0x206 {
		return 255, nil
	}
	return int(binary.LittleEndian.Uint32(kernel[0x238:])), nil
}
