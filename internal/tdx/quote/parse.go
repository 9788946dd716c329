// Parse reads TDX quotes with go-tdx-guest's abi package, turning
// parser panics into errors. go-tdx-guest v0.3.1 slices past the end of some
// malformed quotes (found by the verifier's FuzzVerifyQuote); quotes come
// from the untrusted side, so a crafted one must be a clear "not a quote",
// never a crash.

package quote

import (
	"fmt"

	"github.com/google/go-tdx-guest/abi"
)

// Parse is abi.QuoteToProto without panics.
func Parse(raw []byte) (q any, err error) {
	defer func() {
		if p := recover(); p != nil {
			q, err = nil, fmt.Errorf("malformed quote: the parser failed (%v)", p)
		}
	}()
	return abi.QuoteToProto(raw)
}
