//go:build !amd64

package crypt

func encryptBlocks8(rk *[15][16]byte, b *byte, n int) { panic("unreachable") }

const haveBlocks8 = false
