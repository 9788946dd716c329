package crypt

import "golang.org/x/sys/cpu"

// encryptBlocks8 encrypts n (a multiple of 8) blocks at b in place with
// AES-256, eight at a time (aes_amd64.s).
//
//go:noescape
func encryptBlocks8(rk *[15][16]byte, b *byte, n int)

// haveBlocks8 says encryptBlocks8 may run: the CPU has AES-NI.
var haveBlocks8 = cpu.X86.HasAES
