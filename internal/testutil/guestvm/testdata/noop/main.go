// Command noop is the /init that guestvm's own tests pack; it does nothing.
package main

func main() {}
