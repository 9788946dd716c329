package main

import "github.com/tdforge/tdforge/initd/measure"

// payloadVerity sets up dm-verity for payloads. It is the seam to
// internal/dmverity (written in parallel); until that package is wired in
// here, every payload fails loudly and is attested as payload-failed.
var payloadVerity measure.Verity
