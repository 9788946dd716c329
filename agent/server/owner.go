package server

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/tdforge/tdforge/agent/convstore"
)

// The conversation API's client secret: the client sends it as
// "Authorization: Bearer <secret>", and the conversations it saves belong
// to convstore.Owner(secret). The host forwards the agent's port, so
// without it the host could read every conversation through the API.
const (
	minBearer = 32
	maxBearer = 128
	// bearerRealm is the WWW-Authenticate challenge of a 401.
	bearerRealm = `Bearer realm="tdforge conversations"`
)

var bearerRE = regexp.MustCompile(fmt.Sprintf(`^[A-Za-z0-9_-]{%d,%d}$`, minBearer, maxBearer))

// bearerHelp says what to send; every 401 carries it.
var bearerHelp = fmt.Sprintf("send \"Authorization: Bearer <secret>\", a secret of %d to %d characters [A-Za-z0-9_-] that only you hold ", minBearer, maxBearer) +
	"(for example 32 random bytes in base64url: head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\\n'); " +
	"your conversations are those saved with the same secret"

// owner returns the owner of the request's conversations, from its bearer
// secret; it answers 401 and returns false when the request has none or a
// malformed one. The secret itself is never logged or echoed.
func owner(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, secret, _ := strings.Cut(h, " ")
	var problem string
	switch {
	case h == "":
		problem = "the conversation API needs a bearer secret"
	case !strings.EqualFold(scheme, "Bearer"):
		problem = "the Authorization header is not a bearer secret"
	case !bearerRE.MatchString(secret):
		problem = fmt.Sprintf("the bearer secret is %d characters or has characters outside [A-Za-z0-9_-]", len(secret))
	default:
		return convstore.Owner(secret), true
	}
	w.Header().Set("WWW-Authenticate", bearerRealm)
	writeError(w, http.StatusUnauthorized, problem+": "+bearerHelp)
	return "", false
}
