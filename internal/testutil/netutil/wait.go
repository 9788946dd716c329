package netutil

import (
	"fmt"
	"net/http"
	"time"
)

// WaitOK polls url through c until it answers 200 OK, for up to limit.
// alive, when not nil, is asked before each try: its error (the server
// exited) ends the wait at once. WaitOK returns nil on a 200, else that
// error or the last failure.
func WaitOK(c *http.Client, url string, limit time.Duration, alive func() error) error {
	var last error
	for deadline := time.Now().Add(limit); ; time.Sleep(200 * time.Millisecond) {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", limit, last)
		}
	}
}
