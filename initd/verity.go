package main

import (
	"github.com/tdforge/tdforge/initd/payload"
	"github.com/tdforge/tdforge/internal/guest/dmverity"
	"github.com/tdforge/tdforge/internal/tdx/policy"
)

// payloadVerity sets up dm-verity for payloads with device-mapper ioctls
// (internal/guest/dmverity); no veritysetup or dmsetup binary is in the image.
var payloadVerity payload.Verity = dmVerity{}

type dmVerity struct{}

func (dmVerity) FindPartition(diskGUID string, index int) (string, error) {
	return dmverity.FindPartition(diskGUID, index)
}

func (dmVerity) Setup(name, device string, p policy.Payload) (string, error) {
	return dmverity.Setup(name, device, p)
}

func (dmVerity) Remove(name string) error { return dmverity.Remove(name) }
