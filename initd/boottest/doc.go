// Package boottest boots initd under QEMU TCG with the pinned Debian kernel
// and checks the measured boot end to end, without payloads (the e2e tests
// boot the dev image with them). It holds tests only.
package boottest
