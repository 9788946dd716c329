// Parse reads TDX quotes with go-tdx-guest's abi package, turning
// parser panics into errors. go-tdx-guest v0.3.1 slices past the end of some
// malformed quotes (found by the verifier's FuzzVerifyQuote); quotes come
// from the untrusted side, so a crafted one must be a clear "not a quote",
// never a crash.

package quote

import (
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// Parse opens a raw TDX quote: abi.QuoteToProto without panics, then
// abi.CheckQuoteV4. It is the verifier's only reading of quote bytes.
func Parse(raw []byte) (q *pb.QuoteV4, err error) {
	defer func() {
		if p := recover(); p != nil {
			q, err = nil, fmt.Errorf("not a TDX quote v4: the parser failed (%v)", p)
		}
	}()
	anyQ, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("not a TDX quote v4: %w", err)
	}
	q, ok := anyQ.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("unsupported quote type %T", anyQ)
	}
	if err := abi.CheckQuoteV4(q); err != nil {
		return nil, fmt.Errorf("malformed TDX quote v4: %w", err)
	}
	return q, nil
}
