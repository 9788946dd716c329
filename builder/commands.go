package main

import "github.com/tdforge/tdforge/internal/cli"

// program is builder's command table, in the order help lists it.
func program() *cli.Program {
	return &cli.Program{
		Name:    "builder",
		Summary: "reproducible TDX image builder (tdforge)",
		Commands: []*cli.Command{
			{Name: "validate", Summary: "check a manifest (syntax, types, references) without building", Run: runValidate},
			{Name: "fmt", Summary: "rewrite manifests in canonical HCL format", Run: runFmt},
			{Name: "build", Summary: "build a deterministic TD image from a manifest", Run: runBuild},
			{Name: "measure", Summary: "compute MRTD and RTMR0..3 (raw: --firmware F [--kernel K --initrd I ...]; or a manifest)", Run: runMeasure},
			{Name: "inspect", Summary: "describe a build output directory (payload partitions, policy, registers)", Run: runInspect},
			{Name: "diff", Summary: "compare two build output directories artifact by artifact", Run: runDiff},
			{Name: "export", Summary: "convert reference values for other verifiers (checkconfig, rvps, flashbots)", Run: runExport},
			{Name: "sign", Summary: "sign reference values (in-toto statement in a DSSE envelope) or generate a signing key", Run: runSign},
			{Name: "launch", Summary: "print or run the QEMU command line for a built image", Run: runLaunch},
			{Name: "shutdown", Summary: "power a launched VM off cleanly (ACPI power button via QMP)", Run: runShutdown},
			{Name: "platforms", Summary: "list the platform profiles (QEMU, OVMF and measurement variant rules)", Run: runPlatforms},
		},
		Footer: `Exit codes:
  0  success
  1  the manifest, an input or the build is wrong (diagnostics printed)
  2  bad command line
  3  a remote input could not be fetched (network)`,
	}
}
