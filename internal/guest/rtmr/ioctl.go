package rtmr

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tdforge/tdforge/internal/tdx/register"
)

// Linux ioctl request encoding (asm-generic/ioctl.h).
func ioc(dir, typ, nr, size uintptr) uintptr { return dir<<30 | size<<16 | typ<<8 | nr }

const (
	iocWrite = 1
	iocRead  = 2
)

// extendReq mirrors struct tdx_extend_rtmr_req { __u8 data[48]; __u8 index; }
// from Intel's downstream include/uapi/linux/tdx-guest.h.
type extendReq struct {
	Data  [48]byte
	Index uint8
}

// reportReq mirrors struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; }.
type reportReq struct {
	ReportData [64]byte
	TDReport   [1024]byte
}

var (
	// CmdExtendRTMR is TDX_CMD_EXTEND_RTMR, _IOW('T', 3, struct tdx_extend_rtmr_req).
	CmdExtendRTMR = ioc(iocWrite, 'T', 3, unsafe.Sizeof(extendReq{}))
	// cmdExtendRTMRRead is the same request as some driver versions declare
	// it, _IOR('T', 3, ...); tried when the first is not recognised.
	cmdExtendRTMRRead = ioc(iocRead, 'T', 3, unsafe.Sizeof(extendReq{}))
	// CmdGetReport0 is TDX_CMD_GET_REPORT0, _IOWR('T', 1, struct tdx_report_req).
	CmdGetReport0 = ioc(iocWrite|iocRead, 'T', 1, unsafe.Sizeof(reportReq{}))
)

// TDREPORT layout: REPORTMACSTRUCT (256) | TEE_TCB_INFO (239) | reserved (17)
// | TDINFO (512). TDINFO: ATTRIBUTES 8, XFAM 8, MRTD, MRCONFIGID, MROWNER,
// MROWNERCONFIG (48 each), then RTMR0..3 (48 each).
const tdReportRTMR0 = 512 + 8 + 8 + 4*48

// RTMRFromTDReport returns an RTMR from a 1024-byte TDREPORT.
func RTMRFromTDReport(report []byte, reg register.Register) ([48]byte, error) {
	var r [48]byte
	if err := checkRTMR(reg); err != nil {
		return r, err
	}
	if len(report) != 1024 {
		return r, fmt.Errorf("rtmr: TDREPORT is %d bytes, want 1024", len(report))
	}
	off := tdReportRTMR0 + 48*reg.RTMRIndex()
	copy(r[:], report[off:off+48])
	return r, nil
}

// Ioctl uses /dev/tdx_guest: TDX_CMD_EXTEND_RTMR to extend (Intel downstream
// kernels) and TDX_CMD_GET_REPORT0 (mainline since 6.2) to read.
type Ioctl struct{ dev string }

// NewIoctl returns a backend over the tdx_guest device node.
func NewIoctl(dev string) *Ioctl { return &Ioctl{dev: dev} }

// Name implements Backend.
func (*Ioctl) Name() string { return "ioctl" }

func (d *Ioctl) do(req uintptr, arg unsafe.Pointer) error {
	f, err := os.OpenFile(d.dev, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// Extend implements Backend.
func (d *Ioctl) Extend(reg register.Register, digest [48]byte) error {
	if err := checkRTMR(reg); err != nil {
		return err
	}
	req := extendReq{Data: digest, Index: uint8(reg.RTMRIndex())}
	err := d.do(CmdExtendRTMR, unsafe.Pointer(&req))
	if errors.Is(err, unix.ENOTTY) {
		err = d.do(cmdExtendRTMRRead, unsafe.Pointer(&req))
	}
	if err != nil {
		if errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("rtmr ioctl: extend %s: %s does not support TDX_CMD_EXTEND_RTMR (needs an Intel downstream kernel or Linux >= 6.16 sysfs)", reg, d.dev)
		}
		return fmt.Errorf("rtmr ioctl: extend %s: %w", reg, err)
	}
	return nil
}

// Read implements Backend via a fresh TDREPORT.
func (d *Ioctl) Read(reg register.Register) ([48]byte, error) {
	if err := checkRTMR(reg); err != nil {
		return [48]byte{}, err
	}
	var req reportReq
	if err := d.do(CmdGetReport0, unsafe.Pointer(&req)); err != nil {
		return [48]byte{}, fmt.Errorf("rtmr ioctl: read %s (TDX_CMD_GET_REPORT0): %w", reg, err)
	}
	return RTMRFromTDReport(req.TDReport[:], reg)
}
