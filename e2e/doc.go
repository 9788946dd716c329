// Package e2e holds the end-to-end tests and benchmarks of the dev image:
// build, boot under QEMU TCG with the TDX simulator, verify, chat, the web
// UI, tamper and crash cases, and the reproducibility harness. It holds
// tests only.
package e2e
