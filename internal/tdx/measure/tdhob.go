package measure

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/tdforge/tdforge/internal/tdx/authenticode"
	"github.com/tdforge/tdforge/internal/tdx/tdvf"
)

// HOB constants (UEFI PI specification, QEMU hw/i386/tdvf-hob.c).
const (
	hobTypeHandoff            = 0x0001
	hobTypeResourceDescriptor = 0x0003
	hobTypeEnd                = 0xffff
	hobHandoffVersion         = 0x0009
	resourceSystemMemory      = 0x0
	resourceMemoryUnaccepted  = 0x7
	// Present | Initialized | Tested, for both private and unaccepted RAM.
	resourceAttrTDVF = 0x7
	phitSize         = 56
	resourceSize     = 48
	endSize          = 8
)

type ramEntry struct {
	addr, length uint64
	added        bool
}

// ramLayout mirrors QEMU's q35 e820 RAM and TDX acceptance of the TD_HOB and
// TempMem sections: entries split around accepted ranges, sorted by address.
func ramLayout(md *tdvf.Metadata, memBytes uint64) ([]ramEntry, error) {
	low := authenticode.BelowFourG(memBytes)
	ram := []ramEntry{{addr: 0, length: low}}
	if memBytes > low {
		ram = append(ram, ramEntry{addr: 1 << 32, length: memBytes - low})
	}
	for _, s := range md.Sections {
		if s.Type != tdvf.TDHOB && s.Type != tdvf.TempMem {
			continue
		}
		var err error
		if ram, err = accept(ram, s.MemoryAddress, s.MemoryDataSize); err != nil {
			return nil, fmt.Errorf("TD HOB: %s section at %#x+%#x: %w", s.Type, s.MemoryAddress, s.MemoryDataSize, err)
		}
	}
	sort.Slice(ram, func(i, j int) bool { return ram[i].addr < ram[j].addr })
	return ram, nil
}

func accept(ram []ramEntry, addr, length uint64) ([]ramEntry, error) {
	for i := range ram {
		e := &ram[i]
		if addr+length <= e.addr || addr >= e.addr+e.length {
			continue
		}
		if e.addr > addr || e.addr+e.length < addr+length {
			return nil, fmt.Errorf("range is not inside one RAM region (guest memory too small?)")
		}
		if e.added {
			return ram, nil
		}
		old := *e
		*e = ramEntry{addr: addr, length: length, added: true}
		if addr > old.addr {
			ram = append(ram, ramEntry{addr: old.addr, length: addr - old.addr})
		}
		if end := addr + length; end < old.addr+old.length {
			ram = append(ram, ramEntry{addr: end, length: old.addr + old.length - end})
		}
		return ram, nil
	}
	return nil, fmt.Errorf("range is outside guest RAM (guest memory too small?)")
}

// TDHOB builds the TD HOB list QEMU hands to TDVF for a VM with memBytes of
// RAM. It returns the full list and the prefix OVMF measures (every HOB up
// to, not including, the end-of-list HOB).
func TDHOB(md *tdvf.Metadata, memBytes uint64) (list, measured []byte, err error) {
	ram, err := ramLayout(md, memBytes)
	if err != nil {
		return nil, nil, err
	}
	sec := md.TDHOB()
	size := phitSize + resourceSize*len(ram) + endSize
	if uint64(size) > sec.MemoryDataSize {
		return nil, nil, fmt.Errorf("TD HOB: %d bytes overrun the %#x-byte TD_HOB section", size, sec.MemoryDataSize)
	}
	b := make([]byte, size)
	hdr := func(off int, typ, length uint16) {
		binary.LittleEndian.PutUint16(b[off:], typ)
		binary.LittleEndian.PutUint16(b[off+2:], length)
	}
	hdr(0, hobTypeHandoff, phitSize)
	binary.LittleEndian.PutUint32(b[8:], hobHandoffVersion)
	binary.LittleEndian.PutUint64(b[48:], sec.MemoryAddress+uint64(size)) // EfiEndOfHobList
	off := phitSize
	for _, e := range ram {
		hdr(off, hobTypeResourceDescriptor, resourceSize)
		typ := uint32(resourceMemoryUnaccepted)
		if e.added {
			typ = resourceSystemMemory
		}
		binary.LittleEndian.PutUint32(b[off+24:], typ)
		binary.LittleEndian.PutUint32(b[off+28:], resourceAttrTDVF)
		binary.LittleEndian.PutUint64(b[off+32:], e.addr)
		binary.LittleEndian.PutUint64(b[off+40:], e.length)
		off += resourceSize
	}
	hdr(off, hobTypeEnd, endSize)
	return b, b[:off], nil
}
