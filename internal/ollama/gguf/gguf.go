// Package gguf writes a deterministic tiny llama model in the GGUF v3 format
// and reads and validates the metadata of (possibly multi-GB) GGUF files
// without reading their tensor data.
package gguf

import "fmt"

// Magic is the first four bytes of a GGUF file.
const Magic = "GGUF"

// ValueType is a GGUF metadata value type.
type ValueType uint32

// Metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var typeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"}

func (t ValueType) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Array is an array metadata value. Values holds Go values of the element
// type (uint8, int8, ..., string, bool, or Array for nested arrays).
type Array struct {
	Elem   ValueType
	Values []any
}

// ggmlF32 is the ggml_type of F32 tensors.
const ggmlF32 = 0

// Llama vocabulary token types (tokenizer.ggml.token_type).
const (
	TokenNormal  = 1
	TokenUnknown = 2
	TokenControl = 3
	TokenByte    = 6
)

// alignment is the default general.alignment.
const alignment = 32
