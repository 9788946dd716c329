package canonjson

import (
	"encoding/json"
	"errors"
	"io"
)

// Decode reads exactly one JSON value from r into v, the strict way every
// document tdforge defines is read: a field v does not have is an error,
// and so is anything but white space after the value.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
