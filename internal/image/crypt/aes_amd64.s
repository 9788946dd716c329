#include "textflag.h"

// func encryptBlocks8(rk *[15][16]byte, b *byte, n int)
//
// Encrypts n (a multiple of 8) 16-byte blocks at b in place with AES-256
// (ECB), eight blocks interleaved so that the AES-NI pipeline stays full.
// rk holds the 15 round keys in FIPS-197 byte order.
TEXT ·encryptBlocks8(SB), NOSPLIT, $0-24
	MOVQ rk+0(FP), AX
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX

loop:
	CMPQ CX, $0
	JE   done
	MOVOU 0(AX), X8
	MOVOU 0(DI), X0
	MOVOU 16(DI), X1
	MOVOU 32(DI), X2
	MOVOU 48(DI), X3
	MOVOU 64(DI), X4
	MOVOU 80(DI), X5
	MOVOU 96(DI), X6
	MOVOU 112(DI), X7
	PXOR  X8, X0
	PXOR  X8, X1
	PXOR  X8, X2
	PXOR  X8, X3
	PXOR  X8, X4
	PXOR  X8, X5
	PXOR  X8, X6
	PXOR  X8, X7

#define ROUND(off) \
	MOVOU off(AX), X8 \
	AESENC X8, X0 \
	AESENC X8, X1 \
	AESENC X8, X2 \
	AESENC X8, X3 \
	AESENC X8, X4 \
	AESENC X8, X5 \
	AESENC X8, X6 \
	AESENC X8, X7

	ROUND(16)
	ROUND(32)
	ROUND(48)
	ROUND(64)
	ROUND(80)
	ROUND(96)
	ROUND(112)
	ROUND(128)
	ROUND(144)
	ROUND(160)
	ROUND(176)
	ROUND(192)
	ROUND(208)

	MOVOU      224(AX), X8
	AESENCLAST X8, X0
	AESENCLAST X8, X1
	AESENCLAST X8, X2
	AESENCLAST X8, X3
	AESENCLAST X8, X4
	AESENCLAST X8, X5
	AESENCLAST X8, X6
	AESENCLAST X8, X7
	MOVOU X0, 0(DI)
	MOVOU X1, 16(DI)
	MOVOU X2, 32(DI)
	MOVOU X3, 48(DI)
	MOVOU X4, 64(DI)
	MOVOU X5, 80(DI)
	MOVOU X6, 96(DI)
	MOVOU X7, 112(DI)
	ADDQ $128, DI
	SUBQ $8, CX
	JMP  loop

done:
	RET
