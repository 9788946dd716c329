package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tdforge/tdforge/internal/canonjson"
	"github.com/tdforge/tdforge/internal/cli"
	"github.com/tdforge/tdforge/internal/image/gptdisk"
	"github.com/tdforge/tdforge/internal/image/imagedir"
	"github.com/tdforge/tdforge/internal/tdx/policy"
	"github.com/tdforge/tdforge/internal/tdx/refvalues"
	"github.com/tdforge/tdforge/internal/tdx/register"
)

// inspectOutput is `builder inspect --json`.
type inspectOutput struct {
	Image     imagedir.ImageInfo  `json:"image"`
	VM        imagedir.VMInfo     `json:"vm"`
	TDX       imagedir.TDXInfo    `json:"tdx"`
	Artifacts map[string]string   `json:"artifacts"`
	DiskGUID  string              `json:"disk_guid,omitempty"`
	Payloads  []inspectPartition  `json:"payloads"`
	KeyBroker *policy.KeyBroker   `json:"key_broker,omitempty"`
	Services  []policy.Service    `json:"services"`
	Registers refvalues.Registers `json:"registers"`
	Reasons   map[string]string   `json:"reasons,omitempty"`
}

type inspectPartition struct {
	Name           string `json:"name"`
	Partition      int    `json:"partition"`
	GUID           string `json:"guid"`
	StartLBA       uint64 `json:"start_lba"`
	Size           uint64 `json:"size"`
	DataSize       uint64 `json:"data_size"`
	HashOffset     uint64 `json:"hash_offset"`
	VerityRootHash string `json:"verity_root_hash"`
	Salt           string `json:"salt"`
	// Encryption is the boot policy's: cipher parameters and the key's
	// resource id at the broker (never the key).
	Encryption *policy.Encryption `json:"encryption,omitempty"`
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: builder inspect [--json] DIR\n\nDIR is a 'builder build -o DIR' output.\n")
		fs.PrintDefaults()
	}
	if code, ok := cli.ParseArgs(fs, args, 1); !ok {
		return code
	}
	dir := fs.Arg(0)
	out, err := inspect(dir)
	if err != nil {
		return fail(stderr, "inspect", err)
	}
	if *asJSON {
		if err := canonjson.Encode(stdout, out); err != nil {
			return fail(stderr, "inspect", err)
		}
		return cli.ExitOK
	}
	fmt.Fprintf(stdout, "image     %s %s (built from %s)\n", out.Image.Name, out.Image.Version, out.Image.Manifest)
	fmt.Fprintf(stdout, "vm        %d cpus, %d MiB, platform %s\n", out.VM.CPUs, out.VM.MemoryMB, out.VM.Platform)
	fmt.Fprintf(stdout, "tdx       simulate=%v debug=%v\n", out.TDX.Simulate, out.TDX.Debug)
	if out.DiskGUID != "" {
		fmt.Fprintf(stdout, "disk      GPT %s\n", out.DiskGUID)
	}
	for _, p := range out.Payloads {
		fmt.Fprintf(stdout, "payload   #%d %-10s data %d B, hash at %d, root %s\n", p.Partition, p.Name, p.DataSize, p.HashOffset, p.VerityRootHash)
		if e := p.Encryption; e != nil {
			fmt.Fprintf(stdout, "          %-13s encrypted %s, %d-bit key %s from the key broker\n", "", e.Cipher, e.KeyBits, e.Resource)
		}
	}
	if kb := out.KeyBroker; kb != nil {
		fmt.Fprintf(stdout, "broker    %s (TLS pin sha256:%s)\n", kb.URL, kb.CASHA256)
	}
	for _, s := range out.Services {
		fmt.Fprintf(stdout, "service   %-10s %s (uid %d, needs %v)\n", s.Name, s.Command, s.UID, s.Payloads)
	}
	for _, reg := range register.All {
		if v := out.Registers.Get(reg); v != nil {
			fmt.Fprintf(stdout, "%-9s %s\n", reg.Key(), *v)
		} else {
			fmt.Fprintf(stdout, "%-9s unknown: %s\n", reg.Key(), out.Reasons[reg.Key()])
		}
	}
	return cli.ExitOK
}

func inspect(dir string) (*inspectOutput, error) {
	info, err := imagedir.ReadInfo(dir)
	if err != nil {
		return nil, err
	}
	out := &inspectOutput{Image: info.Image, VM: info.VM, TDX: info.TDX, Artifacts: info.Artifacts, Payloads: []inspectPartition{}}
	if _, err := os.Stat(filepath.Join(dir, imagedir.Payloads)); err == nil {
		l, err := gptdisk.ReadLayout(filepath.Join(dir, imagedir.Payloads))
		if err != nil {
			return nil, err
		}
		out.DiskGUID = l.DiskGUID
		for _, p := range l.Partitions {
			out.Payloads = append(out.Payloads, inspectPartition{
				Name: p.Name, Partition: p.Index, GUID: p.GUID, StartLBA: p.StartLBA, Size: p.SizeBytes,
				DataSize: p.DataSize, HashOffset: p.HashOffset, VerityRootHash: p.RootHash, Salt: p.Salt,
			})
		}
	}
	pf, err := os.Open(filepath.Join(dir, imagedir.Policy))
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	pol, err := policy.Decode(pf)
	if err != nil {
		return nil, err
	}
	out.Services = pol.Services
	out.KeyBroker = pol.KeyBroker
	for i := range out.Payloads {
		for _, pp := range pol.Payloads {
			if pp.Name == out.Payloads[i].Name {
				out.Payloads[i].Encryption = pp.Encryption
			}
		}
	}
	ref, err := refvalues.ReadFile(filepath.Join(dir, imagedir.ReferenceValues))
	if err != nil {
		return nil, err
	}
	out.Registers, out.Reasons = ref.Registers, ref.Reasons
	return out, nil
}
