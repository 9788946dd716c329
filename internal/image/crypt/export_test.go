package crypt

import "golang.org/x/crypto/xts"

// Encrypt encrypts b (whole sectors) in place; b's first sector is sector
// number first of the image. Only the tests encrypt this way; the builder
// uses Encrypter.
func Encrypt(key, b []byte, first uint64) error {
	return inPlace(key, b, first, (*xts.Cipher).Encrypt)
}
